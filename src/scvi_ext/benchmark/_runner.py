"""Benchmark integration methods on one dataset with scib-metrics; write ``results/<name>.json`` and ``.md``.

Pipeline (the one of ``../shared/reference-results.md``): :func:`scvi_ext.methods.prepare` once, every method
through :func:`scvi_ext.methods.integrate` on that prepared AnnData (timed: wall and process CPU seconds, with
``--threads`` torch/BLAS threads), then all embeddings scored together by
:func:`scvi_ext.metrics.scib_benchmark` (scib-metrics' default metric set, raw scores, pre-integrated = PCA).

Examples
--------
From the repository root::

    .venv/bin/python benchmarks/run.py --dataset ../shared/data/pbmc68k_reduced_counts/pbmc68k_reduced_counts.h5ad \\
        --batch-key lane --labels-key bulk_labels --methods pca,harmony,scvi --name pbmc68k_reduced_counts

Reference implementations (the original packages, in their own environment) plug in through
``--reference-python`` and ``--reference-methods``: see ``benchmarks/README.md`` and ``_common.REFERENCE_RUNNERS``.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from ._common import BENCH_DIR

DEFAULT_METHODS = ("pca", "harmony", "scvi")
REF_SUFFIX = "_ref"
#: Keyword that methods accepting extra categorical covariates take (scvi-tools' name).
COVARIATE_KWARG = "categorical_covariate_keys"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of the benchmark runner.

    Examples
    --------
    >>> build_parser().parse_args(["--dataset", "x.h5ad", "--batch-key", "b", "--labels-key", "l"]).methods
    ['pca', 'harmony', 'scvi']
    """
    p = argparse.ArgumentParser(
        prog="scvi-ext benchmark",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", required=True, type=Path, help="AnnData .h5ad with raw counts")
    p.add_argument("--batch-key", required=True, help="obs column with the batches")
    p.add_argument("--labels-key", required=True, help="obs column with the cell-type labels")
    p.add_argument("--layer", default=None, help="layer holding the counts (default: X)")
    p.add_argument(
        "--methods", type=_csv, default=list(DEFAULT_METHODS), help="comma-separated names from METHODS"
    )
    p.add_argument("--name", default=None, help="results file stem (default: the dataset file stem)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=None, help="epochs of trained methods (default: theirs)")
    p.add_argument("--threads", type=int, default=1, help="torch / BLAS threads during the methods")
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator for trained methods")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="output folder")
    p.add_argument(
        "--extra-covariate-keys",
        nargs="*",
        default=[],
        help=f"obs columns passed as `{COVARIATE_KWARG}` to methods whose runner accepts it (ignored, with a "
        "note in the results, by the others)",
    )
    p.add_argument(
        "--method-kwargs",
        type=json.loads,
        default={},
        help='JSON {method: {kwarg: value}} passed to the methods, e.g. \'{"scvi": {"n_latent": 30}}\'',
    )
    p.add_argument(
        "--neighbors",
        choices=("pynndescent", "scvi_ext"),
        default="pynndescent",
        help="kNN search for scoring: scib-metrics' pynndescent (as the reference) or scvi_ext.neighbors.knn",
    )
    p.add_argument("--reference", type=Path, default=None, help="reference-results.md to compare with")
    p.add_argument(
        "--reference-dataset", default=None, help="section of the reference table (default: --name)"
    )
    p.add_argument(
        "--reference-python",
        type=Path,
        default=None,
        help="interpreter of an environment with the original implementations; runs --reference-methods "
        "through the runners registered in benchmarks/reference/<method>.py (rows '<method>_ref')",
    )
    p.add_argument(
        "--reference-methods", type=_csv, default=[], help="methods to run with --reference-python"
    )
    p.add_argument("--progress", action="store_true", help="show training / scoring progress bars")
    return p


def limit_threads(threads: int) -> None:
    """Cap torch, BLAS/OpenMP and numba threads for the rest of this process.

    Environment variables are only set when absent and numba's own variable is never touched: numba refuses a
    changed ``NUMBA_NUM_THREADS`` once its pool exists, so its count is set through ``numba.set_num_threads``.
    """
    for var in THREAD_ENV_VARS:
        os.environ.setdefault(var, str(threads))
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set once in this process
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - comes with scikit-learn
        pass
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover - comes with scanpy
        pass


def load_reference_runners() -> dict[str, Any]:
    """Import every ``benchmarks/reference/*.py`` (each registers runners) and return the registry."""
    from ._common import REFERENCE_RUNNERS

    folder = BENCH_DIR / "reference"
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        if path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"benchmarks_reference_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return REFERENCE_RUNNERS


def validate(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """Check every argument and the dataset before anything heavy runs; return the loaded AnnData."""
    from scvi_ext.methods import METHODS

    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        parser.error(f"--methods {unknown or '(empty)'}: choose from {sorted(METHODS)}")
    if len(set(args.methods)) != len(args.methods):
        parser.error(f"--methods {args.methods} has duplicates")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.max_epochs is not None and args.max_epochs < 1:
        parser.error("--max-epochs must be >= 1")
    if not isinstance(args.method_kwargs, dict) or not all(
        m in args.methods and isinstance(kw, dict) for m, kw in args.method_kwargs.items()
    ):
        parser.error(f"--method-kwargs must map methods in --methods to dicts, got {args.method_kwargs!r}")
    if args.reference_methods and args.reference_python is None:
        parser.error("--reference-methods needs --reference-python")
    if args.reference_python is not None:
        if not args.reference_python.exists():
            parser.error(f"--reference-python {args.reference_python} does not exist")
        runners = load_reference_runners()
        missing = [m for m in args.reference_methods if m not in runners]
        if missing or not args.reference_methods:
            parser.error(
                f"--reference-methods {missing or '(empty)'}: no runner registered (available: {sorted(runners)}); "
                "add one in benchmarks/reference/<method>.py with _common.register_reference"
            )
    if not args.dataset.is_file():
        parser.error(f"--dataset {args.dataset} is not a file")

    import anndata

    adata = anndata.read_h5ad(args.dataset)
    columns = list(adata.obs.columns)
    for flag, key in [("--batch-key", args.batch_key), ("--labels-key", args.labels_key)] + [
        ("--extra-covariate-keys", k) for k in args.extra_covariate_keys
    ]:
        if key not in columns:
            parser.error(f"{flag} {key!r} is not a column of {args.dataset.name}'s obs (columns: {columns})")
    return adata


def run_methods(args, prepared) -> dict[str, dict[str, Any]]:
    """Run each method on the prepared AnnData (embeddings land in ``prepared.obsm``); return per-method info."""
    from scvi_ext.methods import METHODS, integrate

    from ._common import timed

    out: dict[str, dict[str, Any]] = {}
    for name in args.methods:
        spec = METHODS[name]
        kwargs = dict(args.method_kwargs.get(name, {}))
        settings: dict[str, Any] = {"seed": args.seed, "threads": args.threads, **kwargs}
        if spec.trains:
            settings.update(max_epochs=args.max_epochs, accelerator=args.accelerator)
        if args.extra_covariate_keys:
            if COVARIATE_KWARG in inspect.signature(spec.run).parameters:
                kwargs[COVARIATE_KWARG] = list(args.extra_covariate_keys)
                settings[COVARIATE_KWARG] = list(args.extra_covariate_keys)
            else:
                settings["ignored_extra_covariate_keys"] = list(args.extra_covariate_keys)
                print(f"[run] {name}: does not take {COVARIATE_KWARG}; --extra-covariate-keys ignored")
        print(f"[run] {name} ...", flush=True)
        info: dict[str, Any] = {"settings": settings}
        try:
            with timed() as t:
                integrate(
                    prepared,
                    name,
                    args.batch_key,
                    prepared=prepared,
                    seed=args.seed,
                    max_epochs=args.max_epochs,
                    accelerator=args.accelerator,
                    progress_bar=args.progress,
                    **kwargs,
                )
            info.update(status="ok", seconds={"wall": t.wall, "cpu": t.cpu})
            print(f"[run] {name}: {t.wall:.1f} s wall, {t.cpu:.1f} s CPU", flush=True)
        except Exception as err:  # record it and go on with the other methods
            traceback.print_exc()
            info.update(status="error", error=f"{type(err).__name__}: {err}")
        out[name] = info
    return out


def run_reference_methods(args, prepared, name: str) -> dict[str, dict[str, Any]]:
    """Run the registered reference implementations (``--reference-python``); embeddings -> ``X_<m>_ref``."""
    import numpy as np

    from ._common import REFERENCE_RUNNERS, ReferenceRun, timed

    if args.reference_python is None:
        return {}
    workdir = BENCH_DIR / ".cache" / name
    workdir.mkdir(parents=True, exist_ok=True)
    h5ad = workdir / "prepared.h5ad"
    prepared.write_h5ad(h5ad)
    out: dict[str, dict[str, Any]] = {}
    for method in args.reference_methods:
        row = method + REF_SUFFIX
        run = ReferenceRun(
            method=method,
            python=args.reference_python,
            prepared_h5ad=h5ad,
            batch_key=args.batch_key,
            labels_key=args.labels_key,
            seed=args.seed,
            max_epochs=args.max_epochs,
            workdir=workdir / method,
        )
        run.workdir.mkdir(exist_ok=True)
        info: dict[str, Any] = {
            "settings": {"reference_python": str(args.reference_python), "seed": args.seed}
        }
        try:
            with timed() as t:
                emb = np.asarray(REFERENCE_RUNNERS[method](run), dtype=np.float32)
            if emb.shape[0] != prepared.n_obs or not np.isfinite(emb).all():
                raise RuntimeError(f"reference {method!r} returned an invalid embedding {emb.shape}")
            prepared.obsm[f"X_{row}"] = emb
            info.update(status="ok", seconds={"wall": t.wall, "cpu": t.cpu})
        except Exception as err:  # record it and go on
            traceback.print_exc()
            info.update(status="error", error=f"{type(err).__name__}: {err}")
        out[row] = info
    return out


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    """Write the results table in the layout of reference-results.md (+ reference Total and difference)."""
    from ._common import CPU_COLUMN, MAIN_COLUMNS, OTHER_COLUMNS, WALL_COLUMN, fmt, markdown_table

    methods = result["methods"]
    main_rows, other_rows = [], []
    for name, info in methods.items():
        metrics = info.get("metrics", {})
        secs = info.get("seconds", {})
        ref = info.get("reference") or {}
        total, ref_total = metrics.get("Total"), ref.get("Total")
        delta = None if total is None or ref_total is None else total - ref_total
        if info["status"] != "ok":
            main_rows.append([name] + ["error"] + [""] * (len(MAIN_COLUMNS) + 2))
            continue
        main_rows.append(
            [name]
            + [fmt(metrics.get(col)) for _, col in MAIN_COLUMNS]
            + [fmt(secs.get("cpu"), 0), fmt(ref_total), fmt(delta, signed=True)]
        )
        other_rows.append([name] + [fmt(metrics.get(c)) for c in OTHER_COLUMNS] + [fmt(secs.get("wall"), 1)])
    header = ["method", *(h for h, _ in MAIN_COLUMNS), CPU_COLUMN, "ref Total", "Δ Total"]
    s = result["settings"]
    v = result["versions"]
    m = result["machine"]
    errors = [f"- **{n}** failed: `{i['error']}`" for n, i in methods.items() if i["status"] != "ok"]
    text = [
        f"# {result['name']}",
        "",
        "Reproduce (from the repository root):",
        "",
        "```",
        result["command"],
        "```",
        "",
        f"Dataset `{result['dataset']['path']}`: {result['dataset']['n_obs']} cells x {result['dataset']['n_vars']} "
        f"genes ({result['dataset']['n_features_used']} used), batch `{s['batch_key']}` "
        f"({result['dataset']['n_batches']}), labels `{s['labels_key']}` ({result['dataset']['n_labels']}).",
        f"Raw scib-metrics {v.get('scib-metrics')} scores (default metric set, `min_max_scale=False`, "
        f"pre-integrated = `{s['pre_integrated_key']}`, neighbours: {s['neighbors']}); seed {s['seed']}, "
        f"{s['threads']} thread(s), accelerator `{s['accelerator']}`, max_epochs {s['max_epochs'] or 'default'}. "
        f"`{CPU_COLUMN}` = process CPU seconds of the method alone (preprocessing and scoring excluded). "
        + (
            f"`ref Total` = the row of `{result['reference']['source']}` (section `{result['reference']['dataset']}`),"
            " `Δ Total` = this run - reference."
            if result["reference"]["source"]
            else "No reference section for this dataset: `ref Total` and `Δ Total` are empty."
        ),
        "",
        markdown_table(header, main_rows),
        "",
        "Other metrics of the default set, and wall-clock seconds:",
        "",
        markdown_table(["method", *OTHER_COLUMNS, WALL_COLUMN], other_rows),
        "",
        *(errors + [""] if errors else []),
        f"Run {result['date']} on {m.get('cpu_model')} ({m.get('cpu_count')} cores"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + f"); scvi-ext {v.get('scvi-ext')} (git {result.get('git') or 'n/a'}), scvi-tools {v.get('scvi-tools')}, "
        f"torch {v.get('torch')}, scanpy {v.get('scanpy')}, harmonypy {v.get('harmonypy')}. "
        f"Preprocessing {result['seconds']['prepare']:.1f} s, scoring {result['seconds']['scoring']:.1f} s wall.",
        "",
    ]
    path.write_text("\n".join(text))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status (1 when a method failed)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    limit_threads(args.threads)  # before numpy/scanpy do any work

    from scvi_ext._constants import OBSM_KEYS, latent_key
    from scvi_ext.methods import prepare
    from scvi_ext.metrics import scib_benchmark
    from scvi_ext.metrics._scib import _check_inputs

    from ._common import (
        DEFAULT_REFERENCE,
        command_line,
        describe_machine,
        git_revision,
        jsonable,
        load_reference,
        package_versions,
        timed,
        utc_now,
    )

    adata = validate(args, parser)
    name = args.name or args.dataset.stem
    ref_path = args.reference or DEFAULT_REFERENCE
    ref_dataset = args.reference_dataset or name
    reference = load_reference(ref_path).get(ref_dataset, {})

    print(f"[run] {name}: preparing {args.dataset} ({adata.n_obs} cells x {adata.n_vars} genes)", flush=True)
    try:
        with timed() as t_prep:
            prepared = prepare(adata, args.batch_key, layer=args.layer, seed=args.seed)
        # The scoring needs labels, >90 cells etc.: fail now rather than after training.
        _check_inputs(prepared, args.batch_key, args.labels_key, [OBSM_KEYS.PCA], OBSM_KEYS.PCA)
    except (KeyError, ValueError) as err:
        parser.error(f"{args.dataset.name}: {err}")

    methods = run_methods(args, prepared)
    methods.update(run_reference_methods(args, prepared, name))
    ok = [m for m, info in methods.items() if info["status"] == "ok"]
    keys = [latent_key(m) for m in ok]

    metric_types: dict[str, str] = {}
    with timed() as t_score:
        if ok:
            print(f"[run] scoring {ok} with scib-metrics ...", flush=True)
            scores = scib_benchmark(
                prepared,
                args.batch_key,
                args.labels_key,
                keys,
                pre_integrated_key=OBSM_KEYS.PCA,
                n_jobs=args.threads,
                neighbor_computer=args.neighbors,
                progress_bar=args.progress,
            )
            metric_types = scores.attrs.get("metric_type", {})
            for m, key in zip(ok, keys, strict=True):
                methods[m]["metrics"] = scores.loc[key].to_dict()
    for m, info in methods.items():
        ref_row = reference.get(m)
        if ref_row is not None:
            info["reference"] = ref_row
            ours = {**info.get("metrics", {}), "kBET": info.get("metrics", {}).get("KBET")}
            info["delta"] = {c: ours[c] - v for c, v in ref_row.items() if ours.get(c) is not None}

    raw_argv = sys.argv[1:] if argv is None else list(argv)
    if "--name" not in raw_argv:
        raw_argv += ["--name", name]
    result = {
        "name": name,
        "command": command_line(BENCH_DIR / "run.py", raw_argv),
        "date": utc_now(),
        "git": git_revision(),
        "dataset": {
            "path": os.path.relpath(args.dataset.resolve(), BENCH_DIR.parent),
            "n_obs": adata.n_obs,
            "n_vars": adata.n_vars,
            "n_features_used": prepared.n_vars,
            "n_batches": int(prepared.obs[args.batch_key].nunique()),
            "n_labels": int(prepared.obs[args.labels_key].nunique()),
        },
        "settings": {
            "batch_key": args.batch_key,
            "labels_key": args.labels_key,
            "layer": args.layer,
            "seed": args.seed,
            "threads": args.threads,
            "max_epochs": args.max_epochs,
            "accelerator": args.accelerator,
            "extra_covariate_keys": args.extra_covariate_keys,
            "pre_integrated_key": OBSM_KEYS.PCA,
            "neighbors": args.neighbors,
            "min_max_scale": False,
            "metric_set": "scib-metrics default (BioConservation(), BatchCorrection())",
            "pipeline": "filter_genes(min_cells=1) -> normalize_total(1e4) + log1p -> 2000 HVG "
            "(seurat, batch_key) -> PCA 30 (arpack)",
        },
        "reference": {
            "source": os.path.relpath(ref_path.resolve(), BENCH_DIR.parent) if reference else None,
            "dataset": ref_dataset if reference else None,
        },
        "seconds": {"prepare": t_prep.wall, "scoring": t_score.wall},
        "versions": package_versions(),
        "machine": describe_machine(),
        "metric_types": metric_types,
        "methods": methods,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"{name}.json", args.out / f"{name}.md"
    json_path.write_text(json.dumps(jsonable(result), indent=2) + "\n")
    write_markdown(md_path, jsonable(result))
    print(md_path.read_text())
    print(f"[run] wrote {json_path} and {md_path}")
    return 0 if len(ok) == len(methods) else 1


if __name__ == "__main__":
    sys.exit(main())
