"""Parity benchmark of scvi_ext.SysVI against scvi.external.SysVI, key-finding ablations and speed.

Sub-commands (each run is one process so runs can go in parallel; results are cached per run):

    python benchmarks/sysvi/parity.py run --dataset pancreas --seed 0 --impl ref
    python benchmarks/sysvi/parity.py run --dataset pancreas --seed 0 --impl paper
    python benchmarks/sysvi/parity.py run --dataset pancreas --seed 0 --impl reference --config cvae
    python benchmarks/sysvi/parity.py score --dataset pancreas
    python benchmarks/sysvi/parity.py speed --dataset pancreas --epochs 15 --repeats 3
    python benchmarks/sysvi/parity.py report

``--impl``: ``ref`` = scvi.external.SysVI (scvi-tools in this venv), ``reference`` / ``paper`` = our fidelity
modes. ``--config``: ``vamp_cyc`` (defaults: VampPrior, cycle weight 2), ``vamp`` (cycle 0), ``cvae``
(standard normal, cycle 0), ``cvae_kl5`` (standard normal, cycle 0, KL weight 5).
Pipeline = ../shared/reference-results.md (prepare with the dataset's batch key, scib-metrics Benchmarker,
default metrics, min_max_scale=False, pre-integrated = X_pca), every method single-threaded.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "sysvi"
CACHE = ROOT / "out" / "benchmarks" / "sysvi"

# name: (file, scib batch key = prepare batch key, system key, extra categorical covariates, label key)
DATASETS = {
    "pancreas": (
        "cider_pancreas_baron/cider_pancreas_baron.h5ad",
        "sample",
        "species",
        ["sample"],
        "cell_type",
    ),
    "cellbench": (
        "cellbench_sc_mixology/cellbench_3cl_celseq2_dropseq.h5ad",
        "protocol",
        "protocol",
        [],
        "cell_line",
    ),
    "pbmc68k": ("pbmc68k_reduced_counts/pbmc68k_reduced_counts.h5ad", "lane", "lane", [], "bulk_labels"),
}
CONFIGS = {
    "vamp_cyc": {"prior": "vamp", "plan": {}},
    "vamp": {"prior": "vamp", "plan": {"z_distance_cycle_weight": 0.0}},
    "cvae": {"prior": "standard_normal", "plan": {"z_distance_cycle_weight": 0.0}},
    "cvae_kl5": {"prior": "standard_normal", "plan": {"z_distance_cycle_weight": 0.0, "max_kl_weight": 5.0}},
}
IMPLS = ("ref", "reference", "paper")


def _prepared(dataset: str):
    import anndata as ad

    from scvi_ext.methods import prepare

    path, batch_key, *_ = DATASETS[dataset]
    return prepare(ad.read_h5ad(DATA / path), batch_key)


def _model(impl: str, adata, system: str, covs: list[str], prior: str):
    import scvi

    from scvi_ext.sysvi import SysVI

    kwargs = {"batch_key": system, "categorical_covariate_keys": covs or None}
    if impl == "ref":
        scvi.external.SysVI.setup_anndata(adata, **kwargs)
        return scvi.external.SysVI(adata, prior=prior)
    SysVI.setup_anndata(adata, **kwargs)
    return SysVI(adata, prior=prior, fidelity=impl)


class _EpochTimer:
    def __new__(cls):
        from lightning.pytorch.callbacks import Callback

        class T(Callback):
            def __init__(self):
                self.times: list[float] = []

            def on_train_epoch_start(self, trainer, pl_module):
                self._t = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module):
                self.times.append(time.perf_counter() - self._t)

        return T()


def _train(impl, dataset, seed, config, max_epochs):
    import scvi
    import torch

    torch.set_num_threads(1)
    _, _, system, covs, _ = DATASETS[dataset]
    adata = _prepared(dataset)
    scvi.settings.seed = seed
    cfg = CONFIGS[config]
    model = _model(impl, adata, system, covs, cfg["prior"])
    timer = _EpochTimer()
    t0 = time.perf_counter()
    model.train(
        max_epochs=max_epochs,
        accelerator="cpu",
        enable_progress_bar=False,
        plan_kwargs=dict(cfg["plan"]),
        callbacks=[timer],
    )
    seconds = time.perf_counter() - t0
    hist = {k: [float(v) for v in model.history[k].to_numpy(dtype=float).ravel()] for k in model.history}
    return model.get_latent_representation(), seconds, timer.times, hist


def cmd_run(args):
    CACHE.mkdir(parents=True, exist_ok=True)
    tag = f"{args.dataset}__{args.config}__{args.impl}__s{args.seed}"
    emb, seconds, epoch_times, hist = _train(args.impl, args.dataset, args.seed, args.config, args.max_epochs)
    np.save(CACHE / f"{tag}.npy", emb)
    final = {k: v[-1] for k, v in hist.items() if k.endswith("_train") or k == "train_loss"}
    rec = {
        "dataset": args.dataset,
        "config": args.config,
        "impl": args.impl,
        "seed": args.seed,
        "seconds": seconds,
        "n_epochs": len(epoch_times),
        "median_epoch_s": float(np.median(epoch_times[1:] if len(epoch_times) > 1 else epoch_times)),
        "final_losses": final,
    }
    (CACHE / f"{tag}.json").write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec))


def _ilisi_system(emb: np.ndarray, system: np.ndarray) -> float:
    """scib-metrics iLISI on the system (90-NN graph, rescaled to [0, 1])."""
    from scib_metrics import ilisi_knn
    from scib_metrics.nearest_neighbors import NeighborsResults

    from scvi_ext.neighbors import knn

    idx, dist = knn(emb, k=90, exclude_self=False)
    return float(ilisi_knn(NeighborsResults(indices=idx, distances=dist), system, perplexity=None))


def cmd_score(args):
    import pandas as pd
    from sklearn.preprocessing import StandardScaler

    from scvi_ext.metrics import scib_benchmark

    _, batch_key, system, _, label = DATASETS[args.dataset]
    adata = _prepared(args.dataset)
    runs = sorted(glob.glob(str(CACHE / f"{args.dataset}__*.json")))
    # rows are independent (min_max_scale=False): keep scores of runs already scored, score only new runs
    out_path = OUT / f"scores_{args.dataset}.json"
    done = {r["tag"]: r for r in json.loads(out_path.read_text())} if out_path.exists() else {}
    keys, meta = [], []
    for path in runs:
        rec = json.loads(Path(path).read_text())
        tag = Path(path).stem
        if tag in done or (args.configs and rec["config"] not in args.configs):
            continue
        rec["tag"] = tag
        adata.obsm[tag] = np.load(CACHE / f"{tag}.npy")
        keys.append(tag)
        meta.append(rec)
    if not keys:
        print("nothing new to score")
        return
    df = scib_benchmark(adata, batch_key, label, keys, n_jobs=1)
    sys_codes = adata.obs[system].astype("category").cat.codes.to_numpy()
    for tag, rec in zip(keys, meta, strict=True):
        rec["scib"] = {k: float(v) for k, v in df.loc[tag].items() if np.isscalar(v)}
        emb = adata.obsm[tag]
        rec["ilisi_system"] = _ilisi_system(emb, sys_codes)
        rec["ilisi_system_scaled_emb"] = _ilisi_system(StandardScaler().fit_transform(emb), sys_codes)
        rec["n_active_dims"] = int((emb.std(0) > 0.1 * emb.std(0).max()).sum())
    OUT.mkdir(parents=True, exist_ok=True)
    if out_path.exists():  # another score process may have written meanwhile: merge by tag
        done.update({r["tag"]: r for r in json.loads(out_path.read_text())})
    done.update({r["tag"]: r for r in meta})
    meta = sorted(done.values(), key=lambda r: r["tag"])
    out_path.write_text(json.dumps(meta, indent=1))
    print(
        pd.DataFrame(
            [
                {
                    **{k: r[k] for k in ("config", "impl", "seed")},
                    "Total": r["scib"]["Total"],
                    "iLISI_sys": r["ilisi_system"],
                }
                for r in meta
            ]
        ).to_string()
    )


def cmd_speed(args):
    """Per-epoch wall time of REF vs ours (same process, 1 thread, interleaved, best of repeats)."""
    import torch

    torch.set_num_threads(1)
    import scvi
    from lightning.pytorch.callbacks import Callback  # noqa: F401

    _, _, system, covs, _ = DATASETS[args.dataset]
    base = _prepared(args.dataset)
    res: dict[str, list[float]] = {i: [] for i in IMPLS}
    for rep in range(args.repeats):
        for impl in IMPLS:
            adata = base.copy()
            scvi.settings.seed = rep
            model = _model(impl, adata, system, covs, "vamp")
            timer = _EpochTimer()
            model.train(
                max_epochs=args.epochs, accelerator="cpu", enable_progress_bar=False, callbacks=[timer]
            )
            res[impl].append(float(np.median(timer.times[1:])))
            print(impl, rep, res[impl][-1], flush=True)
    best = {i: min(v) for i, v in res.items()}
    out = {
        "dataset": args.dataset,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "threads": 1,
        "n_cells": base.n_obs,
        "n_genes": base.n_vars,
        "median_epoch_s": res,
        "best_epoch_s": best,
        "ratio_reference_vs_ref": best["reference"] / best["ref"],
        "ratio_paper_vs_ref": best["paper"] / best["ref"],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"speed_{args.dataset}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


def _ms(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"


def cmd_report(args):
    import pandas as pd

    cmd = "python benchmarks/sysvi/parity.py report"
    lines = [
        "`bash benchmarks/sysvi/run_all.sh 3 100` (runs + scores + this report; "
        f"it ends with `{cmd}`); speed table: "
        "`python benchmarks/sysvi/parity.py speed --dataset pancreas --epochs 8 --repeats 3`",
        "",
        "# sysVI: parity with scvi.external.SysVI (scvi-tools 1.4.2), key findings, speed",
        "",
        "Pipeline of ../shared/reference-results.md (prepare: 2000 HVGs, PCA 30; scib-metrics Benchmarker, default "
        "metrics, min_max_scale=False). Same data, seeds {0,1,2}, 100 epochs on both sides (scvi-tools' heuristic would be 400: cut for CPU budget), "
        "batch 128, cycle weight 2, 1 torch thread. `ref` = scvi.external.SysVI; `reference`/`paper` = "
        "scvi_ext.SysVI fidelity modes. Mean ± sd over seeds.",
        "",
    ]
    summary = {}
    for ds in DATASETS:
        path = OUT / f"scores_{ds}.json"
        if not path.exists():
            continue
        _, batch_key, system, covs, label = DATASETS[ds]
        df = pd.DataFrame(
            [
                {
                    **{k: r[k] for k in ("config", "impl", "seed", "seconds", "median_epoch_s")},
                    **r["scib"],
                    "iLISI_system": r["ilisi_system"],
                    "iLISI_system_scaled": r["ilisi_system_scaled_emb"],
                    "active_dims": r["n_active_dims"],
                }
                for r in json.loads(path.read_text())
            ]
        )
        lines += [
            f"## {ds} (system = `{system}`, covariates = {covs or 'none'}, scib batch = `{batch_key}`, "
            f"label = `{label}`)",
            "",
            "| impl | n seeds | Total | Batch | Bio | iLISI (scib batch) | KMeans NMI | iLISI (system) | s/epoch |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        par = df[df.config == "vamp_cyc"]
        summary[ds] = {}
        for impl in IMPLS:
            d = par[par.impl == impl]
            if d.empty:
                continue
            summary[ds][impl] = {
                m: [float(d[m].mean()), float(d[m].std(ddof=1)) if len(d) > 1 else 0.0]
                for m in ("Total", "Batch", "Bio", "iLISI_system", "KMeans NMI")
            }
            lines.append(
                f"| {impl} | {len(d)} | {_ms(d.Total)} | {_ms(d.Batch)} | {_ms(d.Bio)} | {_ms(d.iLISI)} | "
                f"{_ms(d['KMeans NMI'])} | {_ms(d.iLISI_system)} | {d.median_epoch_s.median():.3f} |"
            )
        if "ref" in summary[ds]:
            for impl in ("reference", "paper"):
                if impl in summary[ds]:
                    delta = summary[ds][impl]["Total"][0] - summary[ds]["ref"]["Total"][0]
                    lines.append(f"\nTotal({impl}) − Total(ref) = {delta:+.3f} (criterion: ≥ −0.02)")
        recs = {(r["impl"], r["seed"]): r for r in json.loads(path.read_text()) if r["config"] == "vamp_cyc"}
        diffs = []
        for (impl, seed), r in sorted(recs.items()):
            if impl == "reference" and ("ref", seed) in recs:
                a, b = recs[("ref", seed)]["final_losses"], r["final_losses"]
                diffs.append(
                    f"seed {seed}: "
                    + ", ".join(
                        f"{k} {a[k]:.3f} vs {b[k]:.3f}" for k in a if k in b and k != "kl_global_train"
                    )
                )
        if diffs:
            lines += ["", "Final-epoch training losses, ref vs ours (fidelity=reference), same seed:", ""]
            lines += [f"- {d}" for d in diffs]
        lines.append("")
        abl = df[df.impl == "reference"]
        if abl.config.nunique() > 1:
            lines += [
                "### Key findings (ours, fidelity=reference; iLISI on the system, KMeans NMI on the label)",
                "",
                "| model | n seeds | iLISI (system) | iLISI (system, standardised dims) | KMeans NMI | "
                "active dims | Total |",
                "|---|---|---|---|---|---|---|",
            ]
            names = {
                "cvae": "cVAE",
                "cvae_kl5": "cVAE, KL weight 5",
                "vamp": "VampPrior",
                "vamp_cyc": "VampPrior + cycle",
            }
            for cfg in ("cvae", "cvae_kl5", "vamp", "vamp_cyc"):
                d = abl[abl.config == cfg]
                if d.empty:
                    continue
                lines.append(
                    f"| {names[cfg]} | {len(d)} | {_ms(d.iLISI_system)} | {_ms(d.iLISI_system_scaled)} | "
                    f"{_ms(d['KMeans NMI'])} | {d.active_dims.mean():.1f} | {_ms(d.Total)} |"
                )
            lines.append("")
    for ds in DATASETS:
        path = OUT / f"speed_{ds}.json"
        if path.exists():
            s = json.loads(path.read_text())
            lines += [
                f"## Speed ({ds}: {s['n_cells']} cells x {s['n_genes']} genes, {s['epochs']} epochs, best of "
                f"{s['repeats']}, 1 thread, interleaved in one process)",
                "",
                "| impl | best s/epoch | ratio to ref |",
                "|---|---|---|",
            ]
            for impl in IMPLS:
                lines.append(
                    f"| {impl} | {s['best_epoch_s'][impl]:.4f} | {s['best_epoch_s'][impl] / s['best_epoch_s']['ref']:.3f} |"
                )
            lines.append("")
    (OUT / "parity.md").write_text("\n".join(lines) + "\n")
    (OUT / "parity.json").write_text(json.dumps(summary, indent=1))
    print("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dataset", choices=DATASETS, required=True)
    r.add_argument("--impl", choices=IMPLS, required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--config", choices=CONFIGS, default="vamp_cyc")
    r.add_argument("--max-epochs", type=int, default=None)
    s = sub.add_parser("score")
    s.add_argument("--dataset", choices=DATASETS, required=True)
    s.add_argument("--configs", nargs="*", choices=CONFIGS, default=None, help="score only these configs")
    sp = sub.add_parser("speed")
    sp.add_argument("--dataset", choices=DATASETS, default="pancreas")
    sp.add_argument("--epochs", type=int, default=15)
    sp.add_argument("--repeats", type=int, default=3)
    sub.add_parser("report")
    args = p.parse_args(argv)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    {"run": cmd_run, "score": cmd_score, "speed": cmd_speed, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
