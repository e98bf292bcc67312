"""PIANO fast path vs scvi-tools SCVI: training throughput, wall time, profile and peak memory.

Same data, same architecture (3 x 256 hidden, 32 latent), batch 128, equal epochs, one process; both models
train on every cell (no validation split). Steady-state cells/s = cells per epoch / mean time of the epochs
after the first. Writes benchmarks/results/piano/speed_<accelerator>.json and .md.

Usage (CPU, ~15 min on a shared 2-core box)::

    python benchmarks/piano/bench_speed.py --accelerator cpu --threads 1
    python benchmarks/piano/bench_speed.py --accelerator cuda   # same measurement on a GPU

``--memory-only N`` runs one PIANO fast-path training at N cells in this process and prints its peak RSS
(the script calls itself this way, in a subprocess, for the memory row).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "piano"
SHARED = ROOT.parent / "shared" / "data"
ARCH = {"n_layers": 3, "n_hidden": 256, "n_latent": 32}
BATCH_SIZE = 128
REAL = {
    "pbmc68k_reduced_counts": ("pbmc68k_reduced_counts/pbmc68k_reduced_counts.h5ad", "lane"),
    "cider_pancreas_baron": ("cider_pancreas_baron/cider_pancreas_baron.h5ad", "sample"),
    "cellbench": ("cellbench_sc_mixology/cellbench_3cl_celseq2_dropseq.h5ad", "protocol"),
    "scmerge_mesc": ("scmerge_mesc_example/scmerge_mesc_example.h5ad", "batch"),
}


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _hwm_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _scvi_epoch_callback():
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module):
            self._t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds.append(time.perf_counter() - self._t0)

    return EpochTimer()


def time_piano(
    adata, batch_key: str, epochs: int, accelerator: str, seed: int = 0, limit: int | None = None
) -> dict:
    from scvi_ext.piano import PIANO

    a = adata.copy()
    PIANO.setup_anndata(a, batch_key=batch_key)
    model = PIANO(a, **ARCH)
    t0 = time.perf_counter()
    model.train(
        max_epochs=epochs,
        batch_size=BATCH_SIZE,
        accelerator=accelerator,
        progress_bar=False,
        seed=seed,
        limit_train_batches=limit,
    )
    wall = time.perf_counter() - t0
    ep = model.fast_timings_["epoch_seconds"]
    cells = model.fast_timings_["steps_per_epoch"] * BATCH_SIZE
    return {"wall_s": wall, "epoch_s": ep, "cells_per_epoch": cells, "data_mode": model._data_mode}


def time_scvi(
    adata,
    batch_key: str,
    epochs: int,
    accelerator: str,
    gene_likelihood: str = "zinb",
    limit: int | None = None,
) -> dict:
    import scvi

    a = adata.copy()
    scvi.model.SCVI.setup_anndata(a, batch_key=batch_key)
    model = scvi.model.SCVI(a, gene_likelihood=gene_likelihood, **ARCH)
    timer = _scvi_epoch_callback()
    acc = "gpu" if accelerator == "cuda" else accelerator
    t0 = time.perf_counter()
    model.train(
        max_epochs=epochs,
        batch_size=BATCH_SIZE,
        accelerator=acc,
        train_size=1.0,
        enable_progress_bar=False,
        callbacks=[timer],
        **({"limit_train_batches": limit} if limit else {}),
    )
    wall = time.perf_counter() - t0
    n_steps = -(-a.n_obs // BATCH_SIZE)
    cells = a.n_obs if not limit or limit >= n_steps else limit * BATCH_SIZE
    return {"wall_s": wall, "epoch_s": timer.seconds, "cells_per_epoch": cells}


def steady(res: dict) -> float:
    eps = res["epoch_s"][1:] if len(res["epoch_s"]) > 1 else res["epoch_s"]
    return res["cells_per_epoch"] / float(np.mean(eps))


def profile_both(adata, batch_key: str, accelerator: str) -> dict:
    """cProfile one epoch of each; bucket cumulative time into data loading / torch compute / framework."""
    out = {}
    for name, fn in (("piano", time_piano), ("scvi", time_scvi)):
        pr = cProfile.Profile()
        pr.enable()
        fn(adata, batch_key, 1, accelerator)
        pr.disable()
        st = pstats.Stats(pr)
        total = sum(v[3] for k, v in st.stats.items() if k[2] == "time_piano" or k[2] == "time_scvi")
        tot_self = sum(v[2] for v in st.stats.values())
        buckets = {
            "data_loading": 0.0,
            "torch_ops": 0.0,
            "lightning_scvi_framework": 0.0,
            "other_python": 0.0,
        }
        top = []
        for (file, _line, func), (_cc, _nc, tt, _ct, _callers) in st.stats.items():
            f = file.replace("\\", "/")
            if (
                "scvi/dataloaders" in f
                or "/anndata/" in f
                or "scipy/sparse" in f
                or "torch/utils/data" in f
                or "piano/_fast.py" in f
                and func in ("rows", "expand_csr_rows", "_as_float")
            ):
                buckets["data_loading"] += tt
            elif f.startswith("~") or "/torch/" in f:
                buckets["torch_ops"] += tt
            elif "/lightning/" in f or "/scvi/" in f or "/torchmetrics/" in f:
                buckets["lightning_scvi_framework"] += tt
            else:
                buckets["other_python"] += tt
            top.append((tt, f"{Path(file).name}:{func}"))
        top.sort(reverse=True)
        out[name] = {
            "total_s": total,
            "self_time_buckets_s": {k: round(v, 3) for k, v in buckets.items()},
            "self_total_s": round(tot_self, 3),
            "top_self": [(name_, round(t, 3)) for t, name_ in top[:12]],
        }
    return out


def torch_profile_piano_step(adata, batch_key: str, n_steps: int = 20) -> list:
    """torch.profiler table of PIANO's fast step (top ops by self CPU time)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from scvi_ext.piano import PIANO
    from scvi_ext.piano._fast import make_resident_data

    a = adata.copy()
    PIANO.setup_anndata(a, batch_key=batch_key)
    m = PIANO(a, **ARCH)
    from scvi import REGISTRY_KEYS

    res = make_resident_data(
        m.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY), m._covariate_matrix(), torch.device("cpu")
    )
    opt = torch.optim.AdamW(m.module.parameters(), lr=2e-4, weight_decay=0, fused=True)
    beta = torch.zeros(())
    m.module.train()
    perm = torch.randperm(a.n_obs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(n_steps):
            xb, cb, lb = res.rows(perm[i * BATCH_SIZE : (i + 1) * BATCH_SIZE])
            loss = m.module.fast_loss(xb, cb, beta, lb)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    rows = []
    for ev in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]:
        rows.append((ev.key, round(ev.self_cpu_time_total / 1e3 / n_steps, 3)))
    return rows


def memory_only(
    n_cells: int, n_genes: int, epochs: int, limit: int | None = None, data_mode: str = "auto"
) -> None:
    import torch

    torch.set_num_threads(1)
    from scvi_ext.datasets import simulate_counts
    from scvi_ext.piano import PIANO

    base = _rss_mib()
    adata = simulate_counts(n_cells, n_genes, seed=0)
    after_data = _rss_mib()
    peak_data = _peak_rss_mib()  # includes the simulator's own temporaries
    hwm_reset = _reset_hwm()
    PIANO.setup_anndata(adata, batch_key="batch")
    model = PIANO(adata, **ARCH)
    model.train(
        max_epochs=epochs,
        batch_size=BATCH_SIZE,
        accelerator="cpu",
        progress_bar=False,
        limit_train_batches=limit,
        data_on_device=data_mode,
    )
    print(
        json.dumps(
            {
                "n_cells": n_cells,
                "n_genes": n_genes,
                "nnz": int(adata.X.nnz),
                "anndata_csr_mib": round(
                    (adata.X.data.nbytes + adata.X.indices.nbytes + adata.X.indptr.nbytes) / 2**20, 1
                ),
                "rss_after_import_mib": round(base, 1),
                "rss_after_data_mib": round(after_data, 1),
                "peak_rss_simulation_mib": round(peak_data, 1),
                "peak_rss_piano_mib": round(_hwm_mib(), 1) if hwm_reset else None,
                "peak_rss_mib": round(_peak_rss_mib(), 1),
                "data_on_device": data_mode,
                "data_mode": model._data_mode,
                "epoch_s": model.fast_timings_["epoch_seconds"],
            }
        )
    )


def _memory_run(n: int, genes: int, steps: int | None, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-only", str(n), "--genes", str(genes), "--data-mode", mode]
        + (["--steps-per-epoch", str(steps)] if steps else []),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_table(args) -> None:
    """Peak RSS of one fast-path epoch per size and data layout, each in a fresh process."""
    rows = []
    for n in args.sizes:
        for mode in ("dense", "csr", "host"):
            r = _memory_run(n, args.genes, args.steps_per_epoch, mode)
            peak = r["peak_rss_piano_mib"] or r["peak_rss_mib"]
            r["resident_extra_mib"] = round(peak - r["rss_after_data_mib"], 1)
            print(r, flush=True)
            rows.append(r)
    tag = args.tag or "cpu"
    cmd = "python benchmarks/piano/bench_speed.py " + " ".join(sys.argv[1:])
    (RESULTS / f"memory_{tag}.json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=1))
    lines = [
        "```",
        cmd,
        "```",
        "",
        "Peak RSS (VmHWM) of one PIANO fast-path epoch (3x256, 32 latent, batch 128) in a fresh process per "
        "row, after `simulate_counts` built the AnnData (CSR float32). `after data` = RSS once the AnnData exists; "
        "the peak mark (VmHWM) is then reset, so `peak` = highest RSS during PIANO's set-up + training only "
        "(the simulator's own peak is in the JSON); `extra` = peak - after data = what PIANO adds (resident "
        "matrix, model, optimiser, the chunked checks).",
        "",
        "| cells | genes | nnz | AnnData CSR MiB | layout | RSS after import | after data | peak | extra | "
        "epoch s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_cells']} | {r['n_genes']} | {r['nnz']} | {r['anndata_csr_mib']} | {r['data_mode']} | "
            f"{r['rss_after_import_mib']} | {r['rss_after_data_mib']} | {r['peak_rss_piano_mib']} | "
            f"{r['resident_extra_mib']} | {r['epoch_s'][0]:.2f} |"
        )
    lines += [
        "",
        "Rule (`data_on_device='auto'`, `scvi_ext.piano.choose_data_mode`): the dense resident matrix (16-bit for "
        "integer counts <= 65535, else float32: n x G x itemsize bytes) if it takes < 50 % of the device's free "
        "memory (CUDA: `torch.cuda.mem_get_info`; CPU: `MemAvailable`); else CSR on the device if "
        "nnz x (4 + itemsize) + 8 (n + 1) bytes take < 50 %; else CSR kept on the host, rows expanded there and "
        "copied per step.",
    ]
    (RESULTS / f"memory_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    p.add_argument("--epochs", type=int, nargs="+", default=[3, 3, 2], help="epochs per size (same order)")
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="limit every epoch to its first k steps (both models; Lightning's limit_train_batches) on a busy box",
    )
    p.add_argument("--real-epochs", type=int, default=5)
    p.add_argument(
        "--nb-max-cells",
        type=int,
        default=50_000,
        help="also time scVI with gene_likelihood='nb' up to this size",
    )
    p.add_argument("--no-real", action="store_true")
    p.add_argument("--no-simulated", action="store_true", help="only the real datasets")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-only", type=int, default=None)
    p.add_argument("--data-mode", default="auto", help="data_on_device of the --memory-only run")
    p.add_argument(
        "--memory-table",
        action="store_true",
        help="only measure peak RSS of the fast path for every --sizes x {dense, csr, host} (one process each) "
        "and write memory_<tag>.{json,md}",
    )
    p.add_argument("--tag", default=None, help="results file suffix (default: the accelerator)")
    args = p.parse_args()
    if args.memory_only:
        memory_only(args.memory_only, args.genes, 1, args.steps_per_epoch, args.data_mode)
        return
    if args.memory_table:
        memory_table(args)
        return

    import anndata as ad
    import scvi
    import torch

    torch.set_num_threads(args.threads)
    scvi.settings.seed = 0
    scvi.settings.dl_num_workers = 0
    if args.accelerator == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--accelerator cuda requested but torch.cuda.is_available() is False")
    from scvi_ext.datasets import simulate_counts

    epochs = dict(zip(args.sizes, args.epochs + [args.epochs[-1]] * len(args.sizes), strict=False))
    rows = []
    datasets = [] if args.no_simulated else [(f"simulated_{n // 1000}k", None, n) for n in args.sizes]
    if not args.no_real:
        datasets += [(name, spec, None) for name, spec in REAL.items()]
    profile = None
    for name, spec, n in datasets:
        if spec is None:
            adata, batch_key, n_ep = simulate_counts(n, args.genes, seed=0), "batch", epochs[n]
        else:
            adata = ad.read_h5ad(SHARED / spec[0])
            batch_key, n_ep = spec[1], args.real_epochs
        print(f"[{name}] {adata.n_obs} x {adata.n_vars}, {n_ep} epochs", flush=True)
        lim = args.steps_per_epoch if spec is None else None
        piano = time_piano(adata, batch_key, n_ep, args.accelerator, limit=lim)
        sc_zinb = time_scvi(adata, batch_key, n_ep, args.accelerator, "zinb", limit=lim)
        sc_nb = (
            time_scvi(adata, batch_key, n_ep, args.accelerator, "nb", limit=lim)
            if adata.n_obs <= args.nb_max_cells
            else None
        )
        row = {
            "dataset": name,
            "n_cells": adata.n_obs,
            "n_genes": adata.n_vars,
            "epochs": n_ep,
            "piano": piano,
            "scvi_zinb": sc_zinb,
            "scvi_nb": sc_nb,
            "piano_cells_per_s": steady(piano),
            "scvi_zinb_cells_per_s": steady(sc_zinb),
            "scvi_nb_cells_per_s": steady(sc_nb) if sc_nb else float("nan"),
        }
        row["ratio_vs_scvi_zinb"] = row["piano_cells_per_s"] / row["scvi_zinb_cells_per_s"]
        row["ratio_vs_scvi_nb"] = (
            row["piano_cells_per_s"] / row["scvi_nb_cells_per_s"] if sc_nb else float("nan")
        )
        row["wall_ratio_vs_scvi_zinb"] = sc_zinb["wall_s"] / piano["wall_s"]
        print(
            f"  PIANO {row['piano_cells_per_s']:.0f} cells/s (wall {piano['wall_s']:.1f}s) | scVI zinb "
            f"{row['scvi_zinb_cells_per_s']:.0f} ({sc_zinb['wall_s']:.1f}s) | scVI nb {row['scvi_nb_cells_per_s']:.0f}"
            f" | ratio {row['ratio_vs_scvi_zinb']:.2f}x / {row['ratio_vs_scvi_nb']:.2f}x",
            flush=True,
        )
        rows.append(row)
        if profile is None and not args.no_profile and spec is None and args.accelerator == "cpu":
            profile = {"cprofile_one_epoch": profile_both(adata, batch_key, args.accelerator)}
            profile["torch_profiler_piano_ms_per_step"] = torch_profile_piano_step(adata, batch_key)
            profile["dataset"] = name
    memory = None
    if not args.no_memory and args.accelerator == "cpu":
        n_mem = max(args.sizes)
        out = subprocess.run(
            [sys.executable, __file__, "--memory-only", str(n_mem), "--genes", str(args.genes)]
            + (["--steps-per-epoch", str(args.steps_per_epoch)] if args.steps_per_epoch else []),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        )
        memory = json.loads(out.stdout.strip().splitlines()[-1])
    tag = args.tag or args.accelerator
    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/piano/bench_speed.py " + " ".join(sys.argv[1:])
    env = {
        "torch": torch.__version__,
        "scvi": scvi.__version__,
        "threads": args.threads,
        "device": torch.cuda.get_device_name() if args.accelerator == "cuda" else "cpu",
        "cpu_count": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
    }
    (RESULTS / f"speed_{tag}.json").write_text(
        json.dumps({"command": cmd, "env": env, "rows": rows, "profile": profile, "memory": memory}, indent=1)
    )
    lines = [
        "```",
        cmd,
        "```",
        "",
        f"Environment: {env}. Same data, same architecture (3x256, 32 latent), batch 128, equal epochs, every cell "
        "trained (no validation split). Steady state = epochs after the first. "
        + (
            f"Simulated data: every epoch limited to its first {args.steps_per_epoch} steps for both models "
            "(Lightning's limit_train_batches), because the shared 2-core box was running ~15 other jobs."
            if args.steps_per_epoch
            else ""
        ),
        "",
        "| dataset | cells | epochs | PIANO cells/s | scVI (zinb) cells/s | scVI (nb) cells/s | ratio vs zinb | "
        "ratio vs nb | PIANO wall s | scVI zinb wall s | wall ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['n_cells']} | {r['epochs']} | {r['piano_cells_per_s']:.0f} | "
            f"{r['scvi_zinb_cells_per_s']:.0f} | {r['scvi_nb_cells_per_s']:.0f} | {r['ratio_vs_scvi_zinb']:.2f} | "
            f"{r['ratio_vs_scvi_nb']:.2f} | {r['piano']['wall_s']:.1f} | {r['scvi_zinb']['wall_s']:.1f} | "
            f"{r['wall_ratio_vs_scvi_zinb']:.2f} |"
        )
    if profile:
        lines += [
            "",
            f"## Profile ({profile['dataset']}, one epoch each, cProfile self time by bucket, s)",
            "",
        ]
        for name, prof in profile["cprofile_one_epoch"].items():
            lines.append(f"- **{name}**: total {prof['total_s']:.2f} s; {prof['self_time_buckets_s']}")
            lines.append(f"  top self time: {prof['top_self'][:8]}")
        lines += ["", "PIANO step, torch.profiler, ms per step (self CPU):", ""]
        lines += [f"- {k}: {v}" for k, v in profile["torch_profiler_piano_ms_per_step"]]
    if memory:
        lines += [
            "",
            "## Memory (PIANO fast path, CPU, separate process)",
            "",
            f"{memory}",
            "",
            "Rule (`data_on_device='auto'`, `scvi_ext.piano.choose_data_mode`): dense 16-bit resident matrix "
            "(n x G x 2 bytes for integer counts <= 65535, else float32) if it takes < 50 % of free memory "
            "(CUDA: `torch.cuda.mem_get_info`; CPU: `MemAvailable`); else CSR on the device if nnz x 6 bytes + "
            "indptr takes < 50 %; else CSR kept on the host with rows expanded there.",
        ]
    (RESULTS / f"speed_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
