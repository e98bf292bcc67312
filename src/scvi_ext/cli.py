"""Command line: ``scvi-ext demo | integrate | map-query | transfer-labels | deconvolve | benchmark``.

Examples
--------
.. code-block:: bash

    scvi-ext demo --out out/demo
    scvi-ext integrate --input data.h5ad --method scvi --batch-key batch --labels-key cell_type --out out/run
    scvi-ext integrate --input ref.h5ad --method piano --batch-key batch --labels-key cell_type --save-model models/ref
    scvi-ext map-query --input query.h5ad --model-dir models/ref --out out/query
    scvi-ext transfer-labels --input rna_atac.h5ad --source-key dataset --reference rna --labels-key cell_type
    scvi-ext deconvolve --spots spots.h5ad --cells cells.h5ad --labels-key cell_type --out out/deconvolve
    scvi-ext benchmark --dataset data.h5ad --batch-key batch --labels-key cell_type --methods pca,harmony,scvi
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._constants import DEFAULTS, latent_key

if TYPE_CHECKING:
    from anndata import AnnData

PROG = "scvi-ext"
INTEGRATED_FILE = "integrated.h5ad"
METRICS_STEM = "metrics"
UMAP_FILE = "umap.png"
MAPPED_FILE = "mapped.h5ad"
LABELS_FILE = "predicted_labels.csv"
TRANSFERRED_FILE = "transferred.h5ad"
PROPORTIONS_FILE = "proportions.csv"
DECONVOLVED_FILE = "deconvolved.h5ad"
DEMO_METHODS = ("pca", "harmony", "scvi", "piano", "sysvi", "sccraft", "uniport", "scbiot_ot")
#: Epochs per trained method in the demo: enough for a meaningful picture in a few minutes on 2 CPU cores.
#: scBIOT appears as its OT refinement (`scbiot_ot`): its prototype VAE needs far more epochs than a demo has.
DEMO_MAX_EPOCHS = {"scvi": 100, "piano": 100, "sysvi": 100, "sccraft": 30, "uniport": 150}


class UserInputError(Exception):
    """Bad input from the command line: reported as one line, exit code 2."""


def read_input(path: str | Path, modality: str | None = None) -> AnnData:
    """Read an ``.h5ad`` file, one modality of an ``.h5mu`` file, or a Seurat / SingleCellExperiment ``.rds`` /
    ``.RData`` file (through :func:`scvi_ext.interop.read_r`, extra ``r``).

    Parameters
    ----------
    path
        File to read.
    modality
        Modality of an ``.h5mu`` file (default: its first).

    Returns
    -------
    AnnData

    Examples
    --------
    >>> adata = read_input("data.h5ad")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"--input {str(path)!r}: no such file")
    from .interop import R_SUFFIXES

    if path.suffix.lower() in R_SUFFIXES:
        from .interop import read_r

        return read_r(path)
    if path.suffix == ".h5mu":
        import mudata

        mdata = mudata.read_h5mu(path)
        mod = modality or next(iter(mdata.mod))
        if mod not in mdata.mod:
            raise UserInputError(f"--modality {mod!r} is not in {path.name} (modalities: {list(mdata.mod)})")
        return mdata.mod[mod]
    if path.suffix != ".h5ad":
        raise UserInputError(
            f"--input {str(path)!r}: expected an .h5ad, .h5mu, or Seurat/SingleCellExperiment .rds/.RData file"
        )
    import anndata

    return anndata.read_h5ad(path)


def _metric_rows(prepared: AnnData, methods: Sequence[str], batch_key: str, labels_key: str | None) -> dict:
    from .metrics import fast_scores

    labels = prepared.obs[labels_key].to_numpy() if labels_key else None
    rows = {}
    for m in methods:
        scores = fast_scores(prepared.obsm[latent_key(m)], prepared.obs[batch_key].to_numpy(), labels)
        scores["seconds"] = float(prepared.uns["scvi_ext"][m]["seconds"])
        rows[m] = scores
    return rows


def _markdown_table(rows: dict[str, dict[str, float]]) -> str:
    cols = list(next(iter(rows.values())))
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{vals[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def run_integration(
    adata: AnnData,
    methods: Sequence[str],
    batch_key: str,
    out: str | Path,
    *,
    labels_key: str | None = None,
    layer: str | None = None,
    max_epochs: int | Mapping[str, int] | None = None,
    seed: int = DEFAULTS.SEED,
    accelerator: str = "auto",
    progress_bar: bool = True,
    plot: bool = True,
) -> dict[str, Path]:
    """Integrate ``adata`` with each method and write the results to ``out``.

    Writes ``integrated.h5ad`` (the user's cells with one ``obsm['X_<method>']`` per method and the
    preprocessing's ``X_pca``), ``metrics.md`` / ``metrics.json`` (fast mixing and conservation metrics, see
    :func:`scvi_ext.metrics.fast_scores`) and ``umap.png`` (coloured by batch and, when given, by label).

    Parameters
    ----------
    adata
        Raw-count AnnData (not modified).
    methods
        Names from :data:`scvi_ext.methods.METHODS`.
    batch_key, labels_key, layer
        ``obs`` columns and counts layer.
    out
        Output folder (created).
    max_epochs
        Epochs for trained methods: one number for all, or ``{method: epochs}`` (missing: the method's default).
    seed, accelerator, progress_bar
        Training settings for trained methods.
    plot
        Whether to draw the UMAP figure.

    Returns
    -------
    dict
        Paths of the written files by kind (``"h5ad"``, ``"metrics_md"``, ``"metrics_json"``, ``"umap"``).

    Examples
    --------
    >>> run_integration(adata, ["pca"], "lane", "out/x", labels_key="bulk_labels")  # doctest: +SKIP
    """
    from .methods import get_method, integrate, prepare

    for m in methods:
        get_method(m)
    if labels_key is not None:
        from ._validation import check_obs_key

        check_obs_key(adata, labels_key, "labels_key")
    prepared = prepare(adata, batch_key, layer=layer, seed=seed)
    for m in methods:
        print(f"[{PROG}] running {m} ...", flush=True)
        integrate(
            adata,
            m,
            batch_key,
            prepared=prepared,
            max_epochs=max_epochs.get(m) if isinstance(max_epochs, Mapping) else max_epochs,
            seed=seed,
            accelerator=accelerator,
            progress_bar=progress_bar,
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = adata.copy()
    keys = ["X_pca"] + [latent_key(m) for m in methods if m != "pca"]
    for key in keys:
        result.obsm[key] = prepared.obsm[key]
    result.uns["scvi_ext"] = {m: dict(v) for m, v in prepared.uns["scvi_ext"].items()}
    paths = {"h5ad": out / INTEGRATED_FILE}
    result.write_h5ad(paths["h5ad"])

    rows = _metric_rows(prepared, methods, batch_key, labels_key)
    paths["metrics_json"] = out / f"{METRICS_STEM}.json"
    paths["metrics_json"].write_text(json.dumps({"batch_key": batch_key, "labels_key": labels_key, "methods": rows}, indent=2))
    paths["metrics_md"] = out / f"{METRICS_STEM}.md"
    paths["metrics_md"].write_text(
        f"# Integration metrics (batch: `{batch_key}`, labels: `{labels_key}`)\n\n" + _markdown_table(rows)
    )
    if plot:
        from .plotting import plot_umaps

        color = [batch_key] + ([labels_key] if labels_key else [])
        paths["umap"] = plot_umaps(prepared, [latent_key(m) for m in methods], color, out / UMAP_FILE, seed=seed)
    return paths


def _cmd_demo(args: argparse.Namespace) -> int:
    from .datasets import pbmc68k_reduced_counts
    from .datasets._pbmc import BATCH_KEY, LABELS_KEY
    from .methods import METHODS

    methods = _parse_methods(args.methods) if args.methods else [m for m in DEMO_METHODS if m in METHODS]
    if "harmony" in methods:
        try:
            import harmonypy  # noqa: F401
        except ImportError:
            print(f"[{PROG}] harmonypy not installed (extra 'bench'): skipping harmony", file=sys.stderr)
            methods.remove("harmony")
    adata = pbmc68k_reduced_counts()
    print(f"[{PROG}] demo data: pbmc68k_reduced ({adata.n_obs} cells x {adata.n_vars} genes, "
          f"{adata.obs[BATCH_KEY].nunique()} lanes as batches, labels '{LABELS_KEY}')")
    paths = run_integration(
        adata, methods, BATCH_KEY, args.out, labels_key=LABELS_KEY, max_epochs=args.max_epochs or DEMO_MAX_EPOCHS,
        seed=args.seed, accelerator=args.accelerator, progress_bar=not args.no_progress,
    )
    _report(paths)
    return 0


def _cmd_integrate(args: argparse.Namespace) -> int:
    adata = read_input(args.input, args.modality)
    if args.save_model:
        return _integrate_and_save(adata, args)
    paths = run_integration(
        adata, _parse_methods(args.method), args.batch_key, args.out, labels_key=args.labels_key, layer=args.layer,
        max_epochs=args.max_epochs, seed=args.seed, accelerator=args.accelerator, progress_bar=not args.no_progress,
        plot=not args.no_plot,
    )
    _report(paths)
    return 0


def _counts_in_x(adata: AnnData, layer: str | None, where: str) -> AnnData:
    """A copy of ``adata`` with its checked raw counts (``X`` or ``layers[layer]``) in ``X``."""
    from ._validation import check_counts, get_matrix

    counts = get_matrix(adata, layer)
    check_counts(counts, where)
    work = adata.copy()
    work.X = counts
    return work


def _integrate_and_save(adata: AnnData, args: argparse.Namespace) -> int:
    """``integrate --save-model``: train one model on all features, save it for ``map-query``."""
    from .interop import integrate_anndata

    methods = _parse_methods(args.method)
    if len(methods) != 1:
        raise UserInputError(f"--save-model takes exactly one --method, got {methods}")
    from ._validation import check_obs_key

    check_obs_key(adata, args.batch_key, "batch_key")
    if args.labels_key:
        check_obs_key(adata, args.labels_key, "labels_key")
    work = _counts_in_x(adata, args.layer, "adata.X" if args.layer is None else f"adata.layers[{args.layer!r}]")
    emb, _, info = integrate_anndata(
        work, methods[0], args.batch_key, max_epochs=args.max_epochs, seed=args.seed,
        accelerator=args.accelerator, progress_bar=not args.no_progress, model_dir=args.save_model,
        labels_key=args.labels_key,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = adata.copy()
    result.obsm[latent_key(methods[0])] = emb
    paths = {"h5ad": out / INTEGRATED_FILE, "model": Path(args.save_model)}
    result.write_h5ad(paths["h5ad"])
    _report(paths)
    return 0


def _cmd_map_query(args: argparse.Namespace) -> int:
    import pandas as pd

    from ._validation import check_counts, get_matrix
    from .interop import map_query_anndata, read_model_info

    info = read_model_info(args.model_dir)
    query = read_input(args.input, args.modality)
    counts = get_matrix(query, args.layer)
    check_counts(counts, "the query's " + ("X" if args.layer is None else f"layer {args.layer!r}"))
    work = query.copy()
    work.X = counts
    emb, cells, labels, confidence, _ = map_query_anndata(
        work, args.model_dir, batch_key=args.batch_key, max_epochs=args.max_epochs, seed=args.seed,
        accelerator=args.accelerator, progress_bar=not args.no_progress,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = query.copy()
    result.obsm[latent_key(info["method"])] = emb
    paths = {"h5ad": out / MAPPED_FILE}
    if labels:
        key = info.get("labels_key") or "labels"
        result.obs[f"predicted_{key}"] = pd.Categorical(labels)
        result.obs[f"predicted_{key}_confidence"] = confidence
        table = pd.DataFrame({f"predicted_{key}": labels, "confidence": confidence}, index=cells)
        paths["labels_csv"] = out / LABELS_FILE
        table.to_csv(paths["labels_csv"])
    result.write_h5ad(paths["h5ad"])
    _report(paths)
    return 0


def _uniport_datasets(args: argparse.Namespace) -> dict[str, AnnData]:
    """``transfer-labels`` inputs: an ``.h5mu`` (one modality per dataset) or one file split by ``--source-key``."""
    path = Path(args.input)
    if path.suffix == ".h5mu" and args.source_key is None:
        if not path.is_file():
            raise UserInputError(f"--input {str(path)!r}: no such file")
        import mudata

        mods = dict(mudata.read_h5mu(path).mod)
        if len(mods) < 2:
            raise UserInputError(f"--input {path.name} has {len(mods)} modality; transfer-labels needs 2 or more")
        return mods
    if args.source_key is None:
        raise UserInputError("--source-key is required unless --input is an .h5mu with one modality per dataset")
    adata = read_input(path, args.modality)
    from ._validation import check_obs_key

    check_obs_key(adata, args.source_key, "source_key")
    col = adata.obs[args.source_key]
    if col.isna().any():
        raise UserInputError(f"--source-key {args.source_key!r}: {int(col.isna().sum())} cells have no dataset")
    names = [str(c) for c in (col.cat.categories if hasattr(col, "cat") else dict.fromkeys(col))]
    values = col.astype(str).to_numpy()
    datasets = {n: adata[values == n].copy() for n in names if (values == n).any()}
    if len(datasets) < 2:
        raise UserInputError(f"--source-key {args.source_key!r} has {len(datasets)} dataset(s); need 2 or more")
    return datasets


def _cmd_transfer_labels(args: argparse.Namespace) -> int:
    from .uniport import transfer_labels_datasets

    datasets = _uniport_datasets(args)
    if args.reference not in datasets:
        raise UserInputError(f"--reference {args.reference!r} is not a dataset of the input (datasets: {list(datasets)})")
    predictions, prepared = transfer_labels_datasets(
        datasets, args.labels_key, args.reference, method=args.method, layer=args.layer,
        max_iterations=args.max_iterations, seed=args.seed, k=args.k, accelerator=args.accelerator,
        progress_bar=not args.no_progress,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = f"predicted_{args.labels_key}"
    table = predictions.rename(columns={"predicted": key})
    paths = {"labels_csv": out / LABELS_FILE, "h5ad": out / TRANSFERRED_FILE}
    table.to_csv(paths["labels_csv"])
    result = prepared.copy()
    pred = predictions["predicted"].reindex(result.obs_names)
    result.obs[key] = pred.astype(object).where(pred.notna(), None).astype("category")
    result.obs[f"{key}_confidence"] = predictions["confidence"].reindex(result.obs_names).to_numpy(dtype=float)
    result.write_h5ad(paths["h5ad"])
    _report(paths)
    return 0


def _cmd_deconvolve(args: argparse.Namespace) -> int:
    from .uniport import deconvolve_spots

    spots = read_input(args.spots)
    cells = read_input(args.cells)
    props, prepared = deconvolve_spots(
        spots, cells, args.labels_key, layer=args.layer, max_iterations=args.max_iterations, seed=args.seed,
        balance=not args.no_balance, min_cut=args.min_cut, accelerator=args.accelerator,
        progress_bar=not args.no_progress,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"proportions": out / PROPORTIONS_FILE, "h5ad": out / DECONVOLVED_FILE}
    props.to_csv(paths["proportions"])
    result = spots.copy()
    result.obsm["uniport_proportions"] = props.to_numpy(dtype=float)
    result.uns["uniport_proportions_columns"] = [str(c) for c in props.columns]
    result.obsm["X_uniport"] = prepared.obsm["X_uniport"][: spots.n_obs]
    result.write_h5ad(paths["h5ad"])
    _report(paths)
    return 0


def _parse_methods(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def _report(paths: dict[str, Path]) -> None:
    print(f"[{PROG}] wrote:")
    for kind, p in paths.items():
        print(f"  {kind:>12}: {p}")


def _add_common(p: argparse.ArgumentParser, *, data: bool = True) -> None:
    if data:
        p.add_argument(
            "--input", required=True, help=".h5ad, .h5mu, or Seurat/SingleCellExperiment .rds/.RData with raw counts"
        )
        p.add_argument("--modality", default=None, help="modality of an .h5mu input (default: the first)")
        p.add_argument("--batch-key", required=True, help="obs column with the batches")
        p.add_argument("--labels-key", default=None, help="obs column with cell-type labels (for metrics)")
        p.add_argument("--layer", default=None, help="layer with raw counts (default: X)")
    p.add_argument("--max-epochs", type=int, default=None, help="training epochs (default: each method's own)")
    p.add_argument("--seed", type=int, default=DEFAULTS.SEED)
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_uniport_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=DEFAULTS.SEED)
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    """Return the ``scvi-ext`` argument parser.

    Examples
    --------
    >>> build_parser().parse_args(["demo"]).command
    'demo'
    """
    parser = argparse.ArgumentParser(prog=PROG, description="Single-cell integration with scvi-ext.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="integrate the bundled PBMC demo data and write results")
    demo.add_argument("--out", default="out/demo")
    demo.add_argument("--methods", default=None, help=f"comma-separated (default: {','.join(DEMO_METHODS)})")
    _add_common(demo, data=False)
    demo.set_defaults(func=_cmd_demo)

    integ = sub.add_parser("integrate", help="integrate an h5ad with one or more methods")
    _add_common(integ)
    integ.add_argument("--method", required=True, help="method name(s), comma-separated")
    integ.add_argument("--out", default="out/integrate")
    integ.add_argument("--no-plot", action="store_true", help="skip the UMAP figure")
    integ.add_argument(
        "--save-model", default=None, metavar="DIR",
        help="train one model on all features and save it (with the labels, if --labels-key) for map-query",
    )
    integ.set_defaults(func=_cmd_integrate)

    mq = sub.add_parser("map-query", help="map query cells onto a model saved by `integrate --save-model`")
    mq.add_argument("--input", required=True, help="query .h5ad, .h5mu or .rds/.RData with raw counts")
    mq.add_argument("--modality", default=None, help="modality of an .h5mu input (default: the first)")
    mq.add_argument("--model-dir", required=True, help="folder written by `integrate --save-model`")
    mq.add_argument("--batch-key", default=None, help="query column with its batches (default: one new batch)")
    mq.add_argument("--layer", default=None, help="layer with raw counts (default: X)")
    mq.add_argument("--out", default="out/map-query")
    _add_common(mq, data=False)
    mq.set_defaults(func=_cmd_map_query)

    tl = sub.add_parser(
        "transfer-labels",
        help="uniPort: integrate datasets (e.g. RNA + ATAC gene activity) and transfer a reference's labels",
    )
    tl.add_argument(
        "--input", required=True,
        help="raw counts: one .h5ad/.rds with a --source-key column, or an .h5mu with one modality per dataset",
    )
    tl.add_argument("--modality", default=None, help="modality of an .h5mu input that holds all datasets")
    tl.add_argument("--source-key", default=None, help="obs column naming each cell's dataset")
    tl.add_argument("--reference", required=True, help="name of the labelled dataset (the OT reference)")
    tl.add_argument("--labels-key", required=True, help="obs column with the reference's labels")
    tl.add_argument("--method", choices=["knn", "ot"], default="knn", help="kNN in the latent or the OT plan")
    tl.add_argument("--k", type=int, default=5, help="neighbours for --method knn")
    tl.add_argument("--layer", default=None, help="layer with raw counts (default: X)")
    tl.add_argument("--max-iterations", type=int, default=1500, help="training minibatch steps")
    tl.add_argument("--out", default="out/transfer-labels")
    _add_uniport_common(tl)
    tl.set_defaults(func=_cmd_transfer_labels)

    dc = sub.add_parser("deconvolve", help="uniPort: cell-type proportions of spatial spots from labelled cells")
    dc.add_argument("--spots", required=True, help="spots x genes raw counts (.h5ad, .h5mu or .rds/.RData)")
    dc.add_argument("--cells", required=True, help="cells x genes raw counts with --labels-key")
    dc.add_argument("--labels-key", required=True, help="obs column of --cells with the cell types")
    dc.add_argument("--layer", default=None, help="layer with raw counts in both (default: X)")
    dc.add_argument("--max-iterations", type=int, default=1500, help="training minibatch steps")
    dc.add_argument("--no-balance", action="store_true", help="do not divide plan mass by cell-type size")
    dc.add_argument("--min-cut", type=float, default=None, help="zero proportions below this fraction of the max")
    dc.add_argument("--out", default="out/deconvolve")
    _add_uniport_common(dc)
    dc.set_defaults(func=_cmd_deconvolve)

    sub.add_parser(
        "benchmark",
        add_help=False,
        help="time and score methods with scib-metrics (extra 'bench'); `scvi-ext benchmark --help` for options",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scvi-ext`` command.

    Returns the exit code: 0 on success, 2 on bad input (one line on stderr, no traceback).

    Examples
    --------
    >>> main(["demo", "--methods", "pca", "--out", "out/demo"])  # doctest: +SKIP
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["benchmark"]:
        from .benchmark import main as benchmark_main

        return benchmark_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserInputError, KeyError, ValueError, FileNotFoundError, ImportError, NotImplementedError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
