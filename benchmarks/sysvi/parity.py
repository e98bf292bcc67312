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
                self.cpu_times: list[float] = []

            def on_train_epoch_start(self, trainer, pl_module):
                self._t, self._c = time.perf_counter(), time.process_time()

            def on_train_epoch_end(self, trainer, pl_module):
                self.times.append(time.perf_counter() - self._t)
                self.cpu_times.append(time.process_time() - self._c)

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


def _cache(epochs: int) -> Path:
    """Cache folder of the runs trained for ``epochs`` epochs (one folder per epoch count)."""
    return CACHE / f"e{epochs}"


def cmd_run(args):
    tag = f"{args.dataset}__{args.config}__{args.impl}__s{args.seed}"
    c0, load0 = time.process_time(), os.getloadavg()
    emb, seconds, epoch_times, hist = _train(args.impl, args.dataset, args.seed, args.config, args.max_epochs)
    cpu_seconds = time.process_time() - c0
    cache = _cache(len(epoch_times))  # max_epochs=None: scvi-tools' heuristic (400 below 20k cells)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / f"{tag}.npy", emb)
    final = {k: v[-1] for k, v in hist.items() if k.endswith("_train") or k == "train_loss"}
    rec = {
        "dataset": args.dataset,
        "config": args.config,
        "impl": args.impl,
        "seed": args.seed,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "max_epochs_arg": args.max_epochs,
        "loadavg_start_end": [list(load0), list(os.getloadavg())],
        "n_epochs": len(epoch_times),
        "median_epoch_s": float(np.median(epoch_times[1:] if len(epoch_times) > 1 else epoch_times)),
        "final_losses": final,
    }
    (cache / f"{tag}.json").write_text(json.dumps(rec, indent=1))
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
    cache = _cache(args.epochs)
    runs = sorted(glob.glob(str(cache / f"{args.dataset}__*.json")))
    # rows are independent (min_max_scale=False): keep scores of runs already scored, score only new runs
    out_path = OUT / f"scores_{args.dataset}_e{args.epochs}.json"
    done = {r["tag"]: r for r in json.loads(out_path.read_text())} if out_path.exists() else {}
    keys, meta = [], []
    for path in runs:
        rec = json.loads(Path(path).read_text())
        tag = Path(path).stem
        if tag in done or (args.configs and rec["config"] not in args.configs):
            continue
        rec["tag"] = tag
        adata.obsm[tag] = np.load(cache / f"{tag}.npy")
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
    """Per-epoch wall and CPU time of REF vs ours: one process, 1 thread, interleaved (order rotated per repeat)."""
    import torch

    torch.set_num_threads(1)
    import scvi

    _, _, system, covs, _ = DATASETS[args.dataset]
    base = _prepared(args.dataset)
    wall: dict[str, list[float]] = {i: [] for i in IMPLS}
    cpu: dict[str, list[float]] = {i: [] for i in IMPLS}
    load0 = os.getloadavg()
    for rep in range(args.repeats):
        for impl in IMPLS[rep % len(IMPLS) :] + IMPLS[: rep % len(IMPLS)]:
            adata = base.copy()
            scvi.settings.seed = rep
            model = _model(impl, adata, system, covs, "vamp")
            timer = _EpochTimer()
            model.train(
                max_epochs=args.epochs, accelerator="cpu", enable_progress_bar=False, callbacks=[timer]
            )
            wall[impl].append(float(np.median(timer.times[1:])))
            cpu[impl].append(float(np.median(timer.cpu_times[1:])))
            print(impl, rep, wall[impl][-1], cpu[impl][-1], flush=True)
    med = {i: float(np.median(v)) for i, v in wall.items()}
    med_cpu = {i: float(np.median(v)) for i, v in cpu.items()}
    out = {
        "dataset": args.dataset,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "threads": 1,
        "n_cells": base.n_obs,
        "n_genes": base.n_vars,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_start_end": [list(load0), list(os.getloadavg())],
        "median_epoch_s": wall,
        "median_epoch_cpu_s": cpu,
        "best_epoch_s": {i: min(v) for i, v in wall.items()},
        "median_of_repeats_epoch_s": med,
        "median_of_repeats_epoch_cpu_s": med_cpu,
        "ratio_reference_vs_ref": med["reference"] / med["ref"],
        "ratio_paper_vs_ref": med["paper"] / med["ref"],
        "cpu_ratio_reference_vs_ref": med_cpu["reference"] / med_cpu["ref"],
        "cpu_ratio_paper_vs_ref": med_cpu["paper"] / med_cpu["ref"],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"speed_{args.dataset}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


def _ms(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"


NAMES = {
    "cvae": "cVAE",
    "cvae_kl5": "cVAE, KL weight 5",
    "vamp": "VampPrior",
    "vamp_cyc": "VampPrior + cycle",
}


def _scores(ds: str, epochs: int):
    import pandas as pd

    path = OUT / f"scores_{ds}_e{epochs}.json"
    if not path.exists():
        return None, []
    recs = json.loads(path.read_text())
    df = pd.DataFrame(
        [
            {
                **{k: r[k] for k in ("config", "impl", "seed", "seconds", "median_epoch_s")},
                **r["scib"],
                "iLISI_system": r["ilisi_system"],
                "iLISI_system_scaled": r["ilisi_system_scaled_emb"],
                "active_dims": r["n_active_dims"],
            }
            for r in recs
        ]
    )
    return df, recs


def _section(ds: str, epochs: int, summary: dict, losses: bool = True) -> list[str]:
    df, recs = _scores(ds, epochs)
    if df is None:
        return []
    _, batch_key, system, covs, label = DATASETS[ds]
    lines = [
        f"### {ds} (system = `{system}`, covariates = {covs or 'none'}, scib batch = `{batch_key}`, "
        f"label = `{label}`), {epochs} epochs",
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
            "n_seeds": len(d),
            **{
                m: [float(d[m].mean()), float(d[m].std(ddof=1)) if len(d) > 1 else 0.0]
                for m in ("Total", "Batch", "Bio", "iLISI_system", "KMeans NMI")
            },
        }
        lines.append(
            f"| {impl} | {len(d)} | {_ms(d.Total)} | {_ms(d.Batch)} | {_ms(d.Bio)} | {_ms(d.iLISI)} | "
            f"{_ms(d['KMeans NMI'])} | {_ms(d.iLISI_system)} | {d.median_epoch_s.median():.3f} |"
        )
    if "ref" in summary[ds]:
        lines.append("")
        for impl in ("reference", "paper"):
            if impl in summary[ds]:
                delta = summary[ds][impl]["Total"][0] - summary[ds]["ref"]["Total"][0]
                summary[ds][impl]["delta_Total_vs_ref"] = delta
                verdict = "met" if delta >= -0.02 else "MISSED"
                lines.append(f"- Total({impl}) − Total(ref) = {delta:+.3f} (criterion ≥ −0.02: {verdict})")
    loads = [r["loadavg_start_end"][0][0] for r in recs if "loadavg_start_end" in r]
    if loads:
        cpu = [r["cpu_seconds"] for r in recs if "cpu_seconds" in r]
        lines.append(
            f"- {len(recs)} runs, one at a time under `nice -n 10`; 1-min load average at run start "
            f"{min(loads):.1f}–{max(loads):.1f} (2 cores); process CPU s per run (whole script) median "
            f"{np.median(cpu):.0f}"
        )
    byrun = {(r["impl"], r["seed"]): r for r in recs if r["config"] == "vamp_cyc"}
    diffs = []
    for (impl, seed), r in sorted(byrun.items()):
        if losses and impl == "reference" and ("ref", seed) in byrun:
            a, b = byrun[("ref", seed)]["final_losses"], r["final_losses"]
            diffs.append(
                f"seed {seed}: "
                + ", ".join(f"{k} {a[k]:.3f} vs {b[k]:.3f}" for k in a if k in b and k != "kl_global_train")
            )
    if diffs:
        lines += ["", "Final-epoch training losses, ref vs ours (fidelity=reference), same seed:", ""]
        lines += [f"- {d}" for d in diffs]
    lines.append("")
    for impl in IMPLS:
        abl = df[df.impl == impl]
        if abl.config.nunique() < 2:
            continue
        lines += [
            f"#### Key findings on {ds} (ours, fidelity={impl}; iLISI on the system, KMeans NMI on the label)",
            "",
            "| model | n seeds | iLISI (system) | iLISI (system, standardised dims) | KMeans NMI | active dims | "
            "Total |",
            "|---|---|---|---|---|---|---|",
        ]
        summary.setdefault("key_findings", {}).setdefault(ds, {})[impl] = {}
        for cfg in NAMES:
            d = abl[abl.config == cfg]
            if d.empty:
                continue
            summary["key_findings"][ds][impl][cfg] = {
                "n_seeds": len(d),
                **{
                    m: [float(d[m].mean()), float(d[m].std(ddof=1)) if len(d) > 1 else 0.0]
                    for m in ("iLISI_system", "KMeans NMI", "Total")
                },
            }
            lines.append(
                f"| {NAMES[cfg]} | {len(d)} | {_ms(d.iLISI_system)} | {_ms(d.iLISI_system_scaled)} | "
                f"{_ms(d['KMeans NMI'])} | {d.active_dims.mean():.1f} | {_ms(d.Total)} |"
            )
        lines.append("")
    return lines


def _load(values) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def _speed_section(path: Path, title: str) -> list[str]:
    s = json.loads(path.read_text())
    med = s.get("median_of_repeats_epoch_s")
    if med is None:  # older file: best of repeats, wall only
        lines = [f"### {title}", "", "| impl | best s/epoch | ratio to ref |", "|---|---|---|"]
        b = s["best_epoch_s"]
        return lines + [f"| {i} | {b[i]:.4f} | {b[i] / b['ref']:.3f} |" for i in IMPLS] + [""]
    cpu = s["median_of_repeats_epoch_cpu_s"]
    lines = [
        f"### {title}",
        "",
        f"{s['n_cells']} cells x {s['n_genes']} genes, {s['epochs']} epochs per run, {s['repeats']} repeats "
        f"interleaved in one process (order rotated), 1 thread, {s['date']}, load average (1/5/15 min) at "
        f"start {_load(s['loadavg_start_end'][0])}, at end {_load(s['loadavg_start_end'][1])} on a shared 2-core "
        "box. "
        "Per run: median over epochs 2..n; table: median over repeats.",
        "",
        "| impl | wall s/epoch | wall ratio to ref | CPU s/epoch | CPU ratio to ref | per-repeat wall s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    for i in IMPLS:
        reps = ", ".join(f"{v:.3f}" for v in s["median_epoch_s"][i])
        lines.append(
            f"| {i} | {med[i]:.4f} | {med[i] / med['ref']:.3f} | {cpu[i]:.4f} | {cpu[i] / cpu['ref']:.3f} | {reps} |"
        )
    verdict = "met" if max(med["reference"], med["paper"]) <= 1.1 * med["ref"] else "MISSED"
    return lines + ["", f"Criterion ours ≤ 1.10 × ref wall time per epoch: {verdict}.", ""]


def cmd_report(args):
    lines = [
        "`bash benchmarks/sysvi/run_all.sh` (all runs one at a time, then scores, speed and this report; it ends "
        "with `python benchmarks/sysvi/parity.py report`). History (100 epochs): `bash benchmarks/sysvi/run_all.sh "
        "1 100`.",
        "",
        f"Report written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "# sysVI: parity with scvi.external.SysVI (scvi-tools 1.4.2), key findings, speed",
        "",
        "Pipeline of ../shared/reference-results.md (prepare: 2000 HVGs, PCA 30; scib-metrics Benchmarker, default "
        "metrics, min_max_scale=False). Same data, seeds {0,1,2}, batch 128, cycle weight 2 (default), train_size "
        "0.9, 1 torch thread on both sides. `ref` = scvi.external.SysVI; `reference`/`paper` = scvi_ext.SysVI "
        "fidelity modes. Mean ± sd over seeds. The box (2 cores) was shared with other workers; quality runs ran "
        "one at a time under `nice -n 10`, so their s/epoch column is only indicative (see the speed section).",
        "",
        f"## Defaults: {args.epochs} epochs (`max_epochs=None`, scvi-tools' heuristic min(round(20000 / n_cells * "
        "400), 400) = 400 for these datasets; same on both sides)",
        "",
    ]
    summary: dict = {f"e{args.epochs}": {}, "e100": {}}
    for ds in DATASETS:
        lines += _section(ds, args.epochs, summary[f"e{args.epochs}"])
    cur = summary[f"e{args.epochs}"]
    both = [ds for ds in ("pancreas", "cellbench") if ds in cur and {"reference", "paper"} <= set(cur[ds])]
    if both:
        tot = {i: float(np.mean([cur[ds][i]["Total"][0] for ds in both])) for i in ("reference", "paper")}
        best = max(tot, key=tot.get)
        per = "; ".join(
            f"{ds}: paper {cur[ds]['paper']['Total'][0]:.3f} ± {cur[ds]['paper']['Total'][1]:.3f} vs reference "
            f"{cur[ds]['reference']['Total'][0]:.3f} ± {cur[ds]['reference']['Total'][1]:.3f}"
            for ds in both
        )
        cur["default_fidelity"] = {"mean_Total": tot, "better": best}
        lines += [
            "## Default fidelity",
            "",
            f"Mean Total over {', '.join(both)} at {args.epochs} epochs: paper {tot['paper']:.3f}, reference "
            f"{tot['reference']:.3f} ({per}). Better: `{best}`. The package default is "
            f"`{_default_fidelity()}`.",
            "",
            "The 100-epoch history below favoured `paper` (0.771 vs 0.746), which had been the default; at the "
            "default 400 epochs the order flips (the gap is small: within one seed-sd on pancreas, 0.010 on "
            "cellbench), so the default was changed to `reference` (= scvi.external.SysVI behaviour) on "
            "2026-11-22. `paper` keeps a smaller seed-to-seed spread.",
            "",
        ]
    if not (OUT / f"scores_pbmc68k_e{args.epochs}.json").exists():
        lines += [
            "## pbmc68k_reduced_counts: not included",
            "",
            "Its README names no system: the only batch is `lane`, the 8 10x channels of one experiment (weak "
            "technical batches). sysVI targets substantial batch effects between systems (species, organoid vs "
            "tissue, cells vs nuclei) and the paper advises scVI for weak ones, so `lane` as the system is not a "
            "defensible sysVI benchmark; it would only exercise the S > 2 system switch, which the unit tests "
            "cover. `python benchmarks/sysvi/parity.py run --dataset pbmc68k ...` still runs it (system = lane).",
            "",
        ]
    for ds in DATASETS:
        path = OUT / f"speed_{ds}.json"
        if path.exists():
            lines += ["## Speed", ""] + _speed_section(path, f"{ds}, interleaved")
    hist = []
    for ds in DATASETS:
        hist += _section(ds, 100, summary["e100"])
    for ds in DATASETS:
        path = OUT / f"speed_{ds}_e100era.json"
        if path.exists():
            hist += _speed_section(path, f"Speed then ({ds}, 8 epochs, best of 3, heavily loaded box)")
    if hist:
        lines += [
            "## History: 100 epochs (first parity run, CPU budget; 3 parallel jobs on the shared box)",
            "",
            "Default fidelity was set to `paper` from this table (mean Total paper 0.771 vs reference 0.746).",
            "",
            *hist,
        ]
    (OUT / "parity.md").write_text("\n".join(lines) + "\n")
    (OUT / "parity.json").write_text(json.dumps(summary, indent=1))
    print("\n".join(lines))


def _default_fidelity() -> str:
    import inspect

    from scvi_ext.sysvi import SysVI

    return str(inspect.signature(SysVI.__init__).parameters["fidelity"].default)


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
    s.add_argument("--epochs", type=int, default=400, help="score the runs trained for this many epochs")
    sp = sub.add_parser("speed")
    sp.add_argument("--dataset", choices=DATASETS, default="pancreas")
    sp.add_argument("--epochs", type=int, default=15)
    sp.add_argument("--repeats", type=int, default=3)
    rp = sub.add_parser("report")
    rp.add_argument("--epochs", type=int, default=400, help="epoch count of the main tables")
    args = p.parse_args(argv)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    {"run": cmd_run, "score": cmd_score, "speed": cmd_speed, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
