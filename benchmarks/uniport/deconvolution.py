"""Spatial deconvolution with uniPort's OT plan, scvi_ext vs the reference ``uniport==1.3`` (PDAC-A).

Usage::

    python benchmarks/uniport/deconvolution.py --reference-python /work/refenv/uniport/bin/python \
        --iterations 600

(a) Pseudo-spots with known proportions: the labelled PDAC-A inDrop cells are split in two halves
(stratified by type); 200 pseudo-spots are sums of 5-15 cells of 1-4 types from the first half; the second
half is the single-cell reference. Both implementations train mode ``h`` (common + specific blocks,
:func:`prepare_anndata`, identical inputs) with ``save_ot=True``, spots = query, cells = OT reference; the
plan goes through the same read-out (:func:`deconvolve_plan`, ``balance=True`` as the PDAC tutorial).
Scores: Pearson correlation of all (spot, type) entries, mean per-spot correlation, RMSE.
(b) The real 428 ST spots against all 1,926 labelled cells: proportions of cancer clone A, ductal (the four
ductal subtypes summed) and acinar cells drawn over the spot grid (PNG), ours and reference.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(1)
import scvi  # noqa: E402

from scvi_ext.uniport import UniPort, deconvolve_plan, make_pseudo_spots, prepare_anndata, proportion_scores  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "shared" / "data" / "pdac_a_spatial"
OUT = HERE.parent / "results" / "uniport"

from side_by_side import run_reference  # noqa: E402


def fit_both(a: ad.AnnData, cell_labels: np.ndarray, iterations: int, seed: int, python: str) -> dict:
    """Train ours and the reference on the same inputs; return spot x type proportions of both."""
    a = a.copy()
    scvi.settings.seed = seed
    UniPort.setup_anndata(a)
    model = UniPort(a)
    t0 = time.perf_counter()
    model.train(max_iterations=iterations, save_ot=True, enable_progress_bar=False)
    secs_ours = time.perf_counter() - t0
    ours = deconvolve_plan(np.asarray(model.get_ot_plan("spots")), cell_labels, balance=True)
    ref = run_reference(python, a, iterations, seed, save_ot=True)
    plan_ref = ref["plan_0"]  # query (domain 0 = spots) x reference (domain 1 = cells), rows in source order
    theirs = deconvolve_plan(plan_ref, cell_labels, balance=True)
    spots = a.obs_names[(a.obs["source"] == "spots").to_numpy()]
    ours.index = theirs.index = spots
    return {
        "ours": ours,
        "reference": theirs,
        "seconds": {"ours": secs_ours, "reference": float(ref["seconds"])},
    }


def plot_maps(spots: ad.AnnData, props: dict[str, pd.DataFrame], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {
        "Cancer clone A": ["Cancer clone A"],
        "Ductal (4 subtypes)": [c for c in next(iter(props.values())).columns if str(c).startswith("Ductal")],
        "Acinar cells": ["Acinar cells"],
    }
    fig, axes = plt.subplots(len(props), len(groups), figsize=(4.2 * len(groups), 3.8 * len(props)))
    xy = spots.obsm["spatial"]
    for r, (impl, P) in enumerate(props.items()):
        for c, (title, cols) in enumerate(groups.items()):
            ax = axes[r, c]
            val = P.reindex(columns=cols, fill_value=0.0).sum(1).to_numpy()
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=val, s=28, cmap="viridis", marker="s", vmin=0)
            ax.set_title(f"{impl}: {title}")
            ax.set_aspect("equal")
            ax.invert_yaxis()
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(sc, ax=ax, fraction=0.046)
    fig.suptitle("PDAC-A ST1: uniPort OT deconvolution (proportion per spot)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference-python", required=True)
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-pseudo-spots", type=int, default=200)
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    cells = ad.read_h5ad(DATA / "pdac_a_indrop_sc.h5ad")
    spots_real = ad.read_h5ad(DATA / "pdac_a_st1_spots.h5ad")
    rng = np.random.default_rng(args.seed)
    labels = cells.obs["cell_type"].astype(str).to_numpy()
    half = np.zeros(cells.n_obs, dtype=bool)
    for t in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == t))
        half[idx[: (len(idx) + 1) // 2]] = True
    pseudo, truth = make_pseudo_spots(cells[half], "cell_type", n_spots=args.n_pseudo_spots, seed=args.seed)
    ref_cells = cells[~half].copy()
    results: dict = {"iterations": args.iterations, "seed": args.seed}
    # (a) pseudo-spots
    a = prepare_anndata({"spots": pseudo, "cells": ref_cells})
    fit = fit_both(
        a,
        ref_cells.obs["cell_type"].astype(str).to_numpy(),
        args.iterations,
        args.seed,
        args.reference_python,
    )
    results["pseudo_spots"] = {
        "n_spots": pseudo.n_obs,
        "n_reference_cells": ref_cells.n_obs,
        "ours": proportion_scores(truth, fit["ours"]),
        "reference": proportion_scores(truth, fit["reference"]),
        "seconds": fit["seconds"],
    }
    print(json.dumps(results["pseudo_spots"], indent=1), flush=True)
    # (b) real spots
    a = prepare_anndata({"spots": spots_real, "cells": cells})
    fit = fit_both(a, labels, args.iterations, args.seed, args.reference_python)
    for impl in ("ours", "reference"):
        fit[impl].to_csv(OUT / f"pdac_st1_proportions_{impl}.csv")
    plot_maps(
        spots_real, {"ours": fit["ours"], "reference": fit["reference"]}, OUT / "pdac_st1_deconvolution.png"
    )
    agree = proportion_scores(fit["reference"], fit["ours"])
    results["real_spots"] = {
        "n_spots": spots_real.n_obs,
        "seconds": fit["seconds"],
        "ours_vs_reference": agree,
        "png": "pdac_st1_deconvolution.png",
    }
    (OUT / "deconvolution.json").write_text(json.dumps(results, indent=2))
    ps = results["pseudo_spots"]
    cmd = (
        f"python benchmarks/uniport/deconvolution.py --reference-python {args.reference_python} "
        f"--iterations {args.iterations} --seed {args.seed} --n-pseudo-spots {args.n_pseudo_spots}"
    )
    md = [
        f"`{cmd}`",
        "",
        "# uniPort OT deconvolution on PDAC-A, scvi_ext vs uniport==1.3",
        "",
        f"Same inputs, {args.iterations} iterations, seed {args.seed}, single-threaded CPU; read-out "
        "`deconvolve_plan(balance=True)` for both plans.",
        "",
        f"## (a) {ps['n_spots']} pseudo-spots (5-15 cells of 1-4 types from half of the labelled cells; the other "
        f"{ps['n_reference_cells']} cells are the reference)",
        "",
        "| implementation | Pearson (all entries) | mean per-spot Pearson | RMSE | fit s |",
        "|---|---|---|---|---|",
    ]
    for impl in ("ours", "reference"):
        s = ps[impl]
        md.append(
            f"| {impl} | {s['pearson_all']:.3f} | {s['pearson_per_spot_mean']:.3f} | {s['rmse']:.4f} | "
            f"{ps['seconds'][impl]:.0f} |"
        )
    rs = results["real_spots"]
    md += [
        "",
        f"## (b) real ST1 spots ({rs['n_spots']}) vs all 1,926 labelled cells",
        "",
        "![maps](pdac_st1_deconvolution.png)",
        "",
        f"Agreement ours vs reference over all (spot, type) entries: Pearson {rs['ours_vs_reference']['pearson_all']:.3f}, "
        f"RMSE {rs['ours_vs_reference']['rmse']:.4f}. Per-spot proportions: `pdac_st1_proportions_{{ours,reference}}.csv`. "
        "No ground truth for real spots: judge the maps against the known layout (cancer clone A in the cancer "
        "region, ductal cells along the duct, acinar cells in the acinar region).",
    ]
    (OUT / "deconvolution.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
