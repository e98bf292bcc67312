"""scvi_ext SCCRAFT vs the reference scCRAFT code: scib-metrics and wall time at equal settings.

Both sides get the same preprocessed AnnData (``scvi_ext.methods.prepare``: 2000 HVGs, log1p CP10k) and the
same ``leiden1``/``leiden2`` columns (clustered once, Leiden ``flavor='leidenalg'``), the same epochs, warm-up
and seed, one torch thread each (timed as wall and as process CPU time: the CPU time is what to compare on a
shared machine), run one after the other in this process (ours) and a subprocess (reference,
``--reference-python``, its source folder on PYTHONPATH via ``--reference-src``), for every seed of
``--seeds`` (each seed re-prepares and re-clusters; the side that runs first alternates with the seed; the
1-minute load average is recorded before and after each pair). Timed: training only.
Scored with ``scvi_ext.metrics.scib_benchmark`` (the reference-results.md setting). Our embedding is scored
twice: the default posterior mean (256-d) and the reference's output form (one latent sample -> PCA 50).

Examples
--------
    python benchmarks/sccraft/side_by_side.py --reference-python /work/refenv/sccraft/bin/python \
        --reference-src /work/refenv/sccraft_src --epochs 10 --warmup 3 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = {
    "pbmc68k_reduced_counts": ("pbmc68k_reduced_counts/pbmc68k_reduced_counts.h5ad", "lane", "bulk_labels"),
    "cider_pancreas_baron": ("cider_pancreas_baron/cider_pancreas_baron.h5ad", "sample", "cell_type"),
    "cellbench_sc_mixology": (
        "cellbench_sc_mixology/cellbench_3cl_celseq2_dropseq.h5ad",
        "protocol",
        "cell_line",
    ),
}
SCORE_COLS = ["Total", "Batch", "Bio", "iLISI", "KBET", "KMeans NMI", "KMeans ARI", "Silhouette label"]


def prepared(name: str, seed: int):
    """Prepared AnnData with the shared pseudo-labels."""
    import anndata as ad

    from scvi_ext.methods import prepare
    from scvi_ext.sccraft import cluster_pseudo_labels

    rel, batch_key, _ = DATASETS[name]
    adata = prepare(ad.read_h5ad(DATA / rel), batch_key, seed=seed)
    adata.obs_names_make_unique()
    cluster_pseudo_labels(adata, random_state=seed, flavor="leidenalg")
    return adata


def run_ours(adata, batch_key: str, epochs: int, warmup: int, seed: int):
    import scvi

    from scvi_ext.sccraft import SCCRAFT

    scvi.settings.seed = seed
    ad = adata.copy()
    SCCRAFT.setup_anndata(ad, batch_key=batch_key)
    model = SCCRAFT(ad)
    t0, c0 = time.perf_counter(), time.process_time()
    model.train(max_epochs=epochs, warmup_epochs=warmup, seed=seed, accelerator="cpu", progress_bar=False)
    train_s = (time.perf_counter() - t0, time.process_time() - c0)
    mean = model.get_latent_representation()
    parity = model.get_latent_representation(give_mean=False, n_pcs=50, seed=seed)
    return train_s, mean, parity, model


def run_reference(adata, batch_key, epochs, warmup, seed, python, src, tmp: Path):
    h5 = tmp / "input.h5ad"
    import anndata as ad

    small = ad.AnnData(X=adata.X.copy(), obs=adata.obs[[batch_key, "leiden1", "leiden2"]].copy())
    small.obs[batch_key] = small.obs[batch_key].astype(str)
    small.write_h5ad(h5)
    prefix = str(tmp / "reference")
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": str(src),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    cmd = [
        python,
        str(HERE / "_reference_driver.py"),
        "train",
        str(h5),
        prefix,
        batch_key,
        str(epochs),
        str(warmup),
        str(seed),
        "1",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"reference failed:\n{proc.stderr[-4000:]}")
    info = json.loads(Path(prefix + ".json").read_text())
    info["process_s"] = wall
    return info, np.load(prefix + ".npy")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference-python", required=True)
    parser.add_argument(
        "--reference-src", required=True, help="folder holding the reference's scCRAFT package"
    )
    parser.add_argument(
        "--datasets", default="pbmc68k_reduced_counts,cider_pancreas_baron,cellbench_sc_mixology"
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=7)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sccraft"))
    args = parser.parse_args(argv)

    import torch

    from scvi_ext.metrics import scib_benchmark

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.datasets.split(",")
    records: dict[str, dict] = {}
    # seeds outermost, datasets inside, and the side that goes first alternates with the seed: both sides see
    # the same mix of machine load over the whole run
    for i, seed in enumerate(seeds):
        for name in names:
            _, batch_key, label_key = DATASETS[name]
            adata = prepared(name, seed)
            record = records.setdefault(
                name,
                {
                    "dataset": name,
                    "n_obs": adata.n_obs,
                    "n_vars": adata.n_vars,
                    "batch_key": batch_key,
                    "label_key": label_key,
                    "n_batches": int(adata.obs[batch_key].nunique()),
                    "epochs": args.epochs,
                    "warmup": args.warmup,
                    "seeds": seeds,
                    "torch_threads": 1,
                    "runs": [],
                },
            )
            run = {
                "seed": seed,
                "n_leiden1": int(adata.obs["leiden1"].nunique()),
                "n_leiden2": int(adata.obs["leiden2"].nunique()),
                "load_before": _load(),
            }

            def _ref(adata=adata, batch_key=batch_key, seed=seed):
                with tempfile.TemporaryDirectory() as tmp:
                    return run_reference(
                        adata,
                        batch_key,
                        args.epochs,
                        args.warmup,
                        seed,
                        args.reference_python,
                        args.reference_src,
                        Path(tmp),
                    )

            if i % 2 == 0:
                ref_info, ref_emb = _ref()
                ours_s, mean, parity, _ = run_ours(adata, batch_key, args.epochs, args.warmup, seed)
                run["order"] = "reference first"
            else:
                ours_s, mean, parity, _ = run_ours(adata, batch_key, args.epochs, args.warmup, seed)
                ref_info, ref_emb = _ref()
                run["order"] = "ours first"
            run["load_after"] = _load()
            run["reference"] = ref_info
            run["ours"] = {"train_s": ours_s[0], "train_cpu_s": ours_s[1]}
            run["speedup_wall"] = ref_info["train_s"] / ours_s[0]
            run["speedup_cpu"] = ref_info["train_cpu_s"] / ours_s[1]
            adata.obsm["X_sccraft_reference"] = ref_emb
            adata.obsm["X_sccraft"] = mean
            adata.obsm["X_sccraft_parity"] = parity
            keys = ["X_pca", "X_sccraft_reference", "X_sccraft", "X_sccraft_parity"]
            scores = scib_benchmark(adata, batch_key, label_key, keys)
            run["scib"] = {k: {c: float(scores.loc[k, c]) for c in SCORE_COLS} for k in keys}
            record["runs"].append(run)
            record["peak_rss_mib_ours_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            (out / f"side_by_side_{name}.json").write_text(json.dumps(record, indent=2))
            print(
                json.dumps(
                    {"dataset": name, "seed": seed}
                    | {k: run[k] for k in ("speedup_wall", "speedup_cpu", "load_after")}
                ),
                flush=True,
            )
            print(scores[SCORE_COLS].round(3).to_string(), flush=True)


if __name__ == "__main__":
    sys.exit(main())
