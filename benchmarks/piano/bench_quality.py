"""scib-metrics Total / Bio / Batch of PIANO next to PCA, Harmony and scVI on the real multi-batch datasets.

Pipeline of ../shared/reference-results.md: ``scvi_ext.methods.prepare`` (2000 HVGs, 30-PC PCA) -> each
method -> ``scvi_ext.metrics.scib_benchmark`` (default metric set, raw scores, pre-integrated = PCA). PCA,
Harmony and scVI (scvi-tools defaults, heuristic epochs) are computed in the same run. PIANO runs at its
defaults (200 epochs, or >= 1,000 optimiser steps on small data; paper settings) with the batch key as its covariate, and on the human + mouse pancreas
also with ``sample`` + ``species`` as two covariates.

Usage::

    python benchmarks/piano/bench_quality.py            # all datasets, ~20 min on 2 shared cores
    python benchmarks/piano/bench_quality.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "piano"
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {
    "pbmc68k_reduced_counts": (
        "pbmc68k_reduced_counts/pbmc68k_reduced_counts.h5ad",
        "lane",
        "bulk_labels",
        None,
    ),
    "cider_pancreas_baron": (
        "cider_pancreas_baron/cider_pancreas_baron.h5ad",
        "sample",
        "cell_type",
        ["species"],
    ),
    "cellbench": ("cellbench_sc_mixology/cellbench_3cl_celseq2_dropseq.h5ad", "protocol", "cell_line", None),
    "scmerge_mesc": ("scmerge_mesc_example/scmerge_mesc_example.h5ad", "batch", "cellTypes", None),
}
COLUMNS = ["Total", "Batch", "Bio", "iLISI", "KBET", "KMeans NMI", "KMeans ARI", "Silhouette label"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument(
        "--piano-epochs",
        type=int,
        default=None,
        help="default: PIANO's own (200, or >= 1,000 steps on small data)",
    )
    p.add_argument("--scvi-epochs", type=int, default=None, help="default: scvi-tools' heuristic")
    p.add_argument("--tag", default="quality")
    p.add_argument(
        "--methods", nargs="+", default=None, help="subset of pca harmony scvi piano piano_<covariates>"
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        help="only merge the results of earlier runs (their --tag names) into <tag>.json/.md",
    )
    args = p.parse_args()
    if args.merge:
        rows, cmds = [], []
        for tag in args.merge:
            d = json.loads((RESULTS / f"{tag}.json").read_text())
            rows += d["rows"]
            cmds.append(d["command"])
        write(rows, cmds + ["python benchmarks/piano/bench_quality.py " + " ".join(sys.argv[1:])], args)
        return

    import anndata as ad
    import scvi
    import torch

    from scvi_ext.methods import prepare
    from scvi_ext.methods._baselines import run_harmony, run_pca, run_scvi
    from scvi_ext.metrics import scib_benchmark
    from scvi_ext.piano import run_piano

    torch.set_num_threads(1)
    scvi.settings.dl_num_workers = 0
    rows = []
    for name in args.datasets:
        path, batch_key, label_key, extra = DATASETS[name]
        raw = ad.read_h5ad(SHARED / path)
        prep = prepare(raw, batch_key)
        methods = ["pca", "harmony", "scvi", "piano"]
        if extra:
            methods.append("piano_" + "_".join([batch_key, *extra]))

        def run(method: str, seed: int, prep=prep, batch_key=batch_key, extra=extra) -> np.ndarray:
            if method == "pca":
                return run_pca(prep, batch_key)
            if method == "harmony":
                return run_harmony(prep, batch_key, seed=seed)
            if method == "scvi":
                return run_scvi(prep, batch_key, max_epochs=args.scvi_epochs, progress_bar=False, seed=seed)
            covs = extra if method != "piano" else None
            return run_piano(
                prep,
                batch_key,
                categorical_covariate_keys=covs,
                max_epochs=args.piano_epochs,
                progress_bar=False,
                seed=seed,
            )

        if args.methods:
            methods = [m for m in methods if m in args.methods]
        for seed in args.seeds:
            keys, secs = [], {}
            for method in methods:
                t0, c0 = time.perf_counter(), time.process_time()
                emb = run(method, seed)
                suffix = f"_e{args.piano_epochs}" if method.startswith("piano") and args.piano_epochs else ""
                key = f"X_{method}{suffix}"
                secs[key] = (time.perf_counter() - t0, time.process_time() - c0)
                prep.obsm[key] = emb
                keys.append(key)
                print(f"[{name} seed {seed}] {method}{suffix}: {secs[key][0]:.1f} s", flush=True)
            df = scib_benchmark(prep, batch_key, label_key, keys)
            for key in keys:
                r = {
                    "dataset": name,
                    "seed": seed,
                    "method": key[2:],
                    "wall_s": secs[key][0],
                    "cpu_s": secs[key][1],
                }
                r.update({c: float(df.loc[key, c]) for c in df.columns})
                rows.append(r)
            print(df[["Total", "Batch", "Bio"]].round(3), flush=True)
    cmd = "python benchmarks/piano/bench_quality.py " + " ".join(sys.argv[1:])
    write(rows, [cmd], args)


def write(rows: list[dict], cmds: list[str], args: argparse.Namespace) -> None:
    """Write ``<tag>.json`` and ``<tag>.md`` (per-dataset tables and the PIANO-vs-scVI verdict)."""
    res = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = "\n".join(cmds)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=1))
    mean = res.groupby(["dataset", "method"], sort=False)[[*COLUMNS, "cpu_s"]].mean()
    lines = [
        "```",
        cmd,
        "```",
        "",
        f"Seeds: {sorted(res['seed'].unique().tolist())}; mean over seeds. Raw scib-metrics scores (min_max_scale=False), "
        "pre-integrated = 30-PC PCA, pipeline of ../shared/reference-results.md.",
        "",
    ]
    verdict = []
    for name in res["dataset"].unique():
        sub = mean.loc[name]
        lines += [
            f"## {name}",
            "",
            "| method | " + " | ".join(COLUMNS) + " | CPU s |",
            "|---" * (len(COLUMNS) + 2) + "|",
        ]
        for method, r in sub.iterrows():
            lines.append(
                f"| {method} | " + " | ".join(f"{r[c]:.3f}" for c in COLUMNS) + f" | {r['cpu_s']:.0f} |"
            )
        lines.append("")
        for method in [m for m in sub.index if m.startswith("piano") and "scvi" in sub.index]:
            d_bio = sub.loc[method, "Bio"] - sub.loc["scvi", "Bio"]
            d_batch = sub.loc[method, "Batch"] - sub.loc["scvi", "Batch"]
            d_tot = sub.loc[method, "Total"] - sub.loc["scvi", "Total"]
            ok = "PASS" if d_bio >= -0.03 else "FAIL"
            verdict.append(f"| {name} | {method} | {d_bio:+.3f} | {d_batch:+.3f} | {d_tot:+.3f} | {ok} |")
    lines += [
        "## PIANO minus scVI (criterion: Bio >= scVI Bio - 0.03)",
        "",
        "| dataset | run | ΔBio | ΔBatch | ΔTotal | Bio criterion |",
        "|---|---|---|---|---|---|",
        *verdict,
    ]
    (RESULTS / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
