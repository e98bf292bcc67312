"""uniPort (scvi_ext) vs the reference ``uniport==1.3``: same inputs, iterations and seed.

Usage::

    python benchmarks/uniport/side_by_side.py --reference-python /work/refenv/uniport/bin/python \
        --iterations 1500 --timing-iterations 100 --repeats 3

For each dataset both implementations get identical [0, 1]-scaled inputs (written to a temporary folder for
the reference, which runs in its own interpreter through ``reference_driver.py``):

- RNA multi-batch sets (pbmc68k_reduced_counts by ``lane``, cider_pancreas_baron by ``sample``): the shared
  pipeline (:func:`scvi_ext.methods.prepare`), log-normalised HVGs MaxAbs-scaled per batch, every batch a
  dataset, the last one the OT reference (uniPort-cm, common features only, as :func:`run_uniport`).
  Scored with scib-metrics (``reference-results.md`` settings) and kNN label transfer (reference dataset ->
  other datasets, k=5): accuracy and macro-F1.
- RNA + ATAC (liger_bmmc_rna_atac: RNA vs ATAC gene activity, mode ``h`` with common and specific blocks,
  :func:`prepare_anndata`): tiny and unlabelled, so only batch mixing (kNN batch entropy, iLISI) and time.

Timing: both sides single-threaded (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``), wall seconds of the
whole fit + latent (the reference's ``Run`` call), each side after an untimed one-iteration warm-up; ``--repeats`` alternating runs at ``--timing-iterations``,
best of each side; ratio = reference / ours. One cProfile of each side is stored.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import subprocess
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(1)

import scvi  # noqa: E402

from scvi_ext.methods import prepare  # noqa: E402
from scvi_ext.metrics import batch_entropy, ilisi_knn, scib_benchmark  # noqa: E402
from scvi_ext.uniport import UniPort, export_reference_inputs, knn_transfer, prepare_anndata  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "shared" / "data"
OUT = HERE.parent / "results" / "uniport"


def rna_inputs(path: Path, batch_key: str) -> tuple[ad.AnnData, ad.AnnData]:
    """(prepared for scib, uniPort inputs) for an RNA multi-batch set."""
    prepared = prepare(ad.read_h5ad(path), batch_key)
    X = np.asarray(prepared.X.toarray() if hasattr(prepared.X, "toarray") else prepared.X, dtype=np.float32)
    batches = prepared.obs[batch_key].astype(str).to_numpy()
    for b in np.unique(batches):
        rows = batches == b
        m = X[rows].max(0)
        X[rows] /= np.where(m > 0, m, 1.0)
    a = ad.AnnData(X, obs=pd.DataFrame(index=prepared.obs_names), var=pd.DataFrame(index=prepared.var_names))
    cats = [str(c) for c in prepared.obs[batch_key].cat.categories]
    a.obs["source"] = pd.Categorical(batches, categories=cats)
    return prepared, a


def bmmc_inputs() -> ad.AnnData:
    folder = DATA / "liger_bmmc_rna_atac"
    return prepare_anndata(
        {
            "atac": ad.read_h5ad(folder / "bmmc_atac_gene_activity.h5ad"),
            "rna": ad.read_h5ad(folder / "bmmc_rna.h5ad"),
        }
    )


def run_ours(
    a: ad.AnnData,
    iterations: int,
    seed: int,
    profile: bool = False,
    early_stopping: bool = True,
    info: dict | None = None,
    monitor: str = "auto",
) -> tuple[np.ndarray, float, str, float]:
    """Fit + latent of ours: ``(latent, wall s, profile text, process CPU s)``; ``info`` gets the epochs run.

    ``monitor``: ``early_stopping_monitor`` (``"auto"`` default; ``"epoch"`` = the reference's rule).
    """
    a = a.copy()
    scvi.settings.seed = seed
    UniPort.setup_anndata(a)
    model = UniPort(a)
    prof = cProfile.Profile() if profile else None
    t0, c0 = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    model.train(
        max_iterations=iterations,
        early_stopping=early_stopping,
        early_stopping_monitor=monitor,
        enable_progress_bar=False,
    )
    z = model.get_latent_representation()
    if prof:
        prof.disable()
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    if info is not None:
        hist = model.history.get("train_loss") if model.history is not None else None
        info["epochs"] = None if hist is None else len(hist)
        info["early_stopped"] = bool(model.early_stopped_)
        info["monitor"] = model.early_stopping_monitor_
    text = ""
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        text = buf.getvalue()
    return z, seconds, text, cpu


def load_average() -> str:
    """``uptime``-style 1/5/15-minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_reference(
    python: str, a: ad.AnnData, iterations: int, seed: int, profile: bool = False, save_ot: bool = False
) -> dict:
    specific, cm = export_reference_inputs(a)
    with tempfile.TemporaryDirectory() as tmp:
        cm.write_h5ad(os.path.join(tmp, "adata_cm.h5ad"))
        for i, s in enumerate(specific):
            s.write_h5ad(os.path.join(tmp, f"specific_{i}.h5ad"))
        out = os.path.join(tmp, "out.npz")
        flags = (["profile"] if profile else []) + (["save_ot"] if save_ot else [])
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        proc = subprocess.run(
            [python, str(HERE / "reference_driver.py"), tmp, out, str(iterations), str(seed), *flags],
            check=True,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        res = dict(np.load(out, allow_pickle=False))
    # the reference prints "EarlyStopping: run N epoch" when its early stopping fires
    stops = re.findall(r"EarlyStopping: run (\d+) epoch", proc.stdout)
    res["early_stop_epoch"] = int(stops[-1]) if stops else None
    order = pd.Index(res["obs_names"].astype(str))
    res["latent"] = res["latent"][order.get_indexer(a.obs_names)]  # back to our row order
    return res


def transfer_scores(z: np.ndarray, sources: np.ndarray, labels: np.ndarray, ref: str) -> dict[str, float]:
    from sklearn.metrics import f1_score

    r, q = sources == ref, sources != ref
    pred = knn_transfer(z[r], labels[r], z[q], k=5).idxmax(axis=1).to_numpy()
    return {
        "accuracy": float((pred == labels[q]).mean()),
        "macro_f1": float(f1_score(labels[q], pred, average="macro")),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference-python", required=True)
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--timing-iterations", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out-name", default="side_by_side", help="results file stem in benchmarks/results/uniport"
    )
    p.add_argument("--skip-quality", action="store_true", help="timing runs only (no full-length runs)")
    p.add_argument(
        "--also-no-early-stopping",
        action="store_true",
        help="quality: also score ours trained for all iterations (early stopping off)",
    )
    p.add_argument(
        "--also-epoch-rule",
        action="store_true",
        help="quality: also score ours with the reference's early-stopping rule (early_stopping_monitor='epoch')",
    )
    p.add_argument(
        "--datasets",
        nargs="*",
        default=["pbmc68k_reduced_counts", "cider_pancreas_baron", "liger_bmmc_rna_atac"],
    )
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.datasets:
        print(f"== {name}", flush=True)
        if name == "liger_bmmc_rna_atac":
            prepared, a, batch_key, label_key = None, bmmc_inputs(), "source", None
        else:
            batch_key, label_key = {
                "pbmc68k_reduced_counts": ("lane", "bulk_labels"),
                "cider_pancreas_baron": ("sample", "cell_type"),
            }[name]
            prepared, a = rna_inputs(DATA / name / f"{name}.h5ad", batch_key)
        entry: dict = {
            "n_cells": a.n_obs,
            "n_common": a.n_vars,
            "n_datasets": int(a.obs["source"].nunique()),
            "iterations": args.iterations,
            "seed": args.seed,
        }
        # timing at equal iterations, alternating, best of repeats
        t_ours, t_ref, c_ours, c_ref = [], [], [], []
        entry["load_before"] = load_average()
        prof_ours = prof_ref = ""
        run_ours(a, 1, args.seed)  # warm-up (untimed): lazy imports, Lightning set-up
        for rep in range(args.repeats):
            _, s, txt, cpu = run_ours(a, args.timing_iterations, args.seed, profile=rep == 0)
            t_ours.append(s)
            c_ours.append(cpu)
            prof_ours = txt or prof_ours
            r = run_reference(args.reference_python, a, args.timing_iterations, args.seed, profile=rep == 0)
            t_ref.append(float(r["seconds"]))
            c_ref.append(float(r["cpu_seconds"]))
            prof_ref = str(r.get("profile", "")) or prof_ref
            print(
                f"   timing rep {rep}: ours {s:.1f}s ({cpu:.1f} CPU s) ref {t_ref[-1]:.1f}s ({c_ref[-1]:.1f} CPU s)",
                flush=True,
            )
        entry["timing"] = {
            "iterations": args.timing_iterations,
            "ours_s": t_ours,
            "reference_s": t_ref,
            "ours_cpu_s": c_ours,
            "reference_cpu_s": c_ref,
            "speedup_best": min(t_ref) / min(t_ours),
            "speedup_cpu_best": min(c_ref) / min(c_ours),
        }
        entry["load_after_timing"] = load_average()
        (OUT / f"profile_{name}_ours.txt").write_text(prof_ours)
        (OUT / f"profile_{name}_reference.txt").write_text(prof_ref)
        if args.skip_quality:
            results[name] = entry
            (OUT / f"{args.out_name}.json").write_text(json.dumps(results, indent=2, default=float))
            continue
        # quality at the full iteration count
        info: dict = {}
        z_ours, s_ours, _, _ = run_ours(a, args.iterations, args.seed, info=info)
        r = run_reference(args.reference_python, a, args.iterations, args.seed)
        z_ref = r["latent"]
        entry["full_run_seconds"] = {"ours": s_ours, "reference": float(r["seconds"])}
        n_steps = max(1, a.n_obs // min(256, a.n_obs))
        entry["epochs"] = {
            "max_epochs": int(np.ceil(args.iterations / n_steps)),
            "ours": info.get("epochs"),
            "ours_early_stopped": info.get("early_stopped"),
            "ours_monitor": info.get("monitor"),
            "reference_early_stop_epoch": r["early_stop_epoch"],
        }
        embeddings = ["X_pca", "X_uniport", "X_uniport_reference"]
        z_full = None
        if args.also_no_early_stopping:
            info_full: dict = {}
            z_full, s_full, _, _ = run_ours(
                a, args.iterations, args.seed, early_stopping=False, info=info_full
            )
            entry["full_run_seconds"]["ours, no early stop"] = s_full
            entry["epochs"]["ours_no_early_stop"] = info_full.get("epochs")
            embeddings.append("X_uniport_full")
        z_epoch = None
        if args.also_epoch_rule:
            info_epoch: dict = {}
            z_epoch, s_epoch, _, _ = run_ours(a, args.iterations, args.seed, info=info_epoch, monitor="epoch")
            entry["full_run_seconds"]["ours, epoch rule"] = s_epoch
            entry["epochs"]["ours_epoch_rule"] = info_epoch.get("epochs")
            entry["epochs"]["ours_epoch_rule_early_stopped"] = info_epoch.get("early_stopped")
            embeddings.append("X_uniport_epoch")
        sources = a.obs["source"].astype(str).to_numpy()
        if prepared is not None:
            prepared.obsm["X_uniport"] = z_ours
            prepared.obsm["X_uniport_reference"] = z_ref
            if z_full is not None:
                prepared.obsm["X_uniport_full"] = z_full
            if z_epoch is not None:
                prepared.obsm["X_uniport_epoch"] = z_epoch
            df = scib_benchmark(prepared, batch_key, label_key, embeddings)
            entry["scib"] = df.to_dict(orient="index")
            labels = prepared.obs[label_key].astype(str).to_numpy()
            ref_src = str(a.obs["source"].cat.categories[-1])
            entry["label_transfer"] = {
                "reference_dataset": ref_src,
                "ours": transfer_scores(z_ours, sources, labels, ref_src),
                "reference": transfer_scores(z_ref, sources, labels, ref_src),
            }
            if z_full is not None:
                entry["label_transfer"]["ours, no early stop"] = transfer_scores(
                    z_full, sources, labels, ref_src
                )
            if z_epoch is not None:
                entry["label_transfer"]["ours, epoch rule"] = transfer_scores(
                    z_epoch, sources, labels, ref_src
                )
        else:
            entry["mixing"] = {
                key: {"batch_entropy": batch_entropy(z, sources), "ilisi": ilisi_knn(z, sources)}
                for key, z in (("ours", z_ours), ("reference", z_ref))
            }
            entry["note"] = "tiny (340 + 340 cells) and unlabelled: batch mixing and time only"
        results[name] = entry
        (OUT / f"{args.out_name}.json").write_text(json.dumps(results, indent=2, default=float))
    write_md(results, args)


def write_md(results: dict, args) -> None:
    cmd = (
        f"python benchmarks/uniport/side_by_side.py --reference-python {args.reference_python} "
        f"--iterations {args.iterations} --timing-iterations {args.timing_iterations} --repeats {args.repeats} "
        f"--seed {args.seed} --datasets {' '.join(args.datasets)} --out-name {args.out_name}"
        + (" --skip-quality" if args.skip_quality else "")
        + (" --also-no-early-stopping" if args.also_no_early_stopping else "")
        + (" --also-epoch-rule" if args.also_epoch_rule else "")
    )
    lines = [f"`{cmd}`", "", "# uniPort: scvi_ext vs uniport==1.3 (same inputs, iterations, seed)", ""]
    lines += [
        f"Date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Single-threaded CPU (torch 1 thread, "
        "OMP_NUM_THREADS=1) on a shared 2-core machine with other jobs running (noisy). Speed-up = best "
        f"reference time / best ours over {args.repeats} alternating runs (ours, reference, ours, ...) of "
        f"{args.timing_iterations} iterations (fit + latent), for wall seconds and for process CPU seconds "
        "(less sensitive to the shared load). Load averages (1/5/15 min) before and after the timing runs "
        "are listed.",
        "",
    ]
    lines += [
        "| dataset | cells | datasets | ours wall s | reference wall s | speed-up wall | ours CPU s | "
        "reference CPU s | speed-up CPU | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in results.items():
        t = e["timing"]
        lines.append(
            f"| {name} | {e['n_cells']} | {e['n_datasets']} | {min(t['ours_s']):.1f} | "
            f"{min(t['reference_s']):.1f} | {t['speedup_best']:.2f}x | {min(t['ours_cpu_s']):.1f} | "
            f"{min(t['reference_cpu_s']):.1f} | {t['speedup_cpu_best']:.2f}x | "
            f"{e['load_before']} / {e['load_after_timing']} |"
        )
    if args.skip_quality:
        lines += ["", "Timing only (`--skip-quality`)."]
        (OUT / f"{args.out_name}.md").write_text("\n".join(lines) + "\n")
        return
    lines += ["", f"## Quality after {args.iterations} iterations (seed {args.seed})", ""]
    cols = ["Total", "Batch", "Bio"]
    lines += [
        "| dataset | embedding | Total | Batch | Bio | kNN transfer acc | macro-F1 | fit s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in results.items():
        if "scib" in e:
            keys = [("X_pca", "pca"), ("X_uniport", "ours"), ("X_uniport_reference", "reference")]
            if "X_uniport_full" in e["scib"]:
                keys.append(("X_uniport_full", "ours, no early stop"))
            if "X_uniport_epoch" in e["scib"]:
                keys.append(("X_uniport_epoch", "ours, epoch rule"))
            for key, label in keys:
                row = e["scib"][key]
                lt = e["label_transfer"].get(label, {})
                secs = e["full_run_seconds"].get(label, float("nan"))
                vals = " | ".join(f"{row.get(c, float('nan')):.3f}" for c in cols)
                acc = f"{lt['accuracy']:.3f} | {lt['macro_f1']:.3f}" if lt else " | "
                lines.append(f"| {name} | {label} | {vals} | {acc} | {secs:.0f} |")
        else:
            for label, m in e["mixing"].items():
                lines.append(
                    f"| {name} | {label} | batch entropy {m['batch_entropy']:.3f} | iLISI {m['ilisi']:.3f} | "
                    f"– | – | – | {e['full_run_seconds'][label]:.0f} |"
                )
    for name, e in results.items():
        ep = e.get("epochs")
        if ep:
            ref_ep = ep["reference_early_stop_epoch"]
            lines += [
                "",
                f"Epochs run ({name}, at most {ep['max_epochs']}): ours {ep['ours']}"
                + (" (early stopping fired, best weights restored)" if ep["ours_early_stopped"] else "")
                + f"; reference {ref_ep if ref_ep else ep['max_epochs']}"
                + (" (early stopping fired)" if ref_ep else " (early stopping did not fire)")
                + (
                    f"; ours without early stopping {ep['ours_no_early_stop']}"
                    if "ours_no_early_stop" in ep
                    else ""
                )
                + (
                    f"; ours with the epoch rule {ep['ours_epoch_rule']}"
                    + (" (fired)" if ep.get("ours_epoch_rule_early_stopped") else "")
                    if "ours_epoch_rule" in ep
                    else ""
                )
                + f". Ours monitors {ep.get('ours_monitor') or 'epoch'!r} (`early_stopping_monitor='auto'`: the "
                "EMA of the step losses, patience 30 x max(steps per epoch, 10) steps, when an epoch has < 10 steps; "
                "else "
                "the reference's rule); the reference and 'ours, epoch rule': patience 30 epochs on the epoch-mean "
                "training loss, strict improvement, best weights restored when it fires.",
            ]
    lines += [
        "",
        "liger_bmmc_rna_atac is tiny (340 RNA + 340 ATAC cells, 172 common genes) and has no labels: only "
        "batch mixing is scored there.",
        "",
        "Profiles (top functions by own time): `profile_<dataset>_{ours,reference}.txt` in this folder.",
    ]
    (OUT / f"{args.out_name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
