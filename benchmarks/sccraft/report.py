"""Write benchmarks/results/sccraft/*.md from the JSON files of side_by_side.py, ablation.py, profile_step.py.

Example
-------
    python benchmarks/sccraft/report.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RES = ROOT / "benchmarks" / "results" / "sccraft"
COLS = ["Total", "Batch", "Bio", "iLISI", "KBET", "KMeans NMI", "KMeans ARI", "Silhouette label"]
SBS_CMD = (
    "python benchmarks/sccraft/side_by_side.py --reference-python /work/refenv/sccraft/bin/python "
    "--reference-src /work/refenv/sccraft_src --epochs {epochs} --warmup {warmup} --seeds {seeds} && "
    "python benchmarks/sccraft/report.py"
)
ABL_CMD = (
    "python benchmarks/sccraft/ablation.py --epochs {epochs} --warmup {warmup} --seeds {seeds} --n-hvg {n_hvg} && "
    "python benchmarks/sccraft/report.py"
)
PROF_CMD = (
    "python benchmarks/sccraft/profile_step.py --reference-python /work/refenv/sccraft/bin/python "
    "--reference-src /work/refenv/sccraft_src && python benchmarks/sccraft/report.py"
)


def _table(scores: dict, names: dict) -> list[str]:
    lines = ["| embedding | " + " | ".join(COLS) + " |", "|---" * (len(COLS) + 1) + "|"]
    for key, label in names.items():
        if key in scores:
            lines.append(f"| {label} | " + " | ".join(f"{scores[key][c]:.3f}" for c in COLS) + " |")
    return lines


def _ms(values) -> str:
    """mean ± sd (sample sd; single value: just the value)."""
    v = [float(x) for x in values]
    mean = sum(v) / len(v)
    if len(v) < 2:
        return f"{mean:.3f}"
    sd = (sum((x - mean) ** 2 for x in v) / (len(v) - 1)) ** 0.5
    return f"{mean:.3f} ± {sd:.3f}"


def _mtime_date(path: Path) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(path.stat().st_mtime, tz=datetime.UTC).strftime("%Y-%m-%d")


def _mean(values) -> float:
    v = [float(x) for x in values]
    return sum(v) / len(v)


def _table_seeds(runs: list[dict], names: dict) -> list[str]:
    lines = ["| embedding | " + " | ".join(COLS) + " |", "|---" * (len(COLS) + 1) + "|"]
    for key, label in names.items():
        if all(key in r["scib"] for r in runs):
            cells = [_ms(r["scib"][key][c] for r in runs) for c in COLS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def side_by_side(res: Path) -> None:
    files = sorted(res.glob("side_by_side_*.json"))
    records = [json.loads(f.read_text()) for f in files]
    records = [r for r in records if r.get("runs")]
    if not records:
        return
    first = records[0]
    seeds = sorted({run["seed"] for r in records for run in r["runs"]})
    cmd = SBS_CMD.format(epochs=first["epochs"], warmup=first["warmup"], seeds=",".join(map(str, seeds)))
    loads = [run[k] for r in records for run in r["runs"] for k in ("load_before", "load_after")]
    out = [
        f"Reproduce: `{cmd}`",
        "",
        "# scCRAFT: scvi_ext vs the reference code (ch2343/scCRAFT @ 02ed693)",
        "",
        f"Run {first.get('date') or _mtime_date(files[0])}; seeds {', '.join(map(str, seeds))}; **{first['epochs']} of the "
        f"150 default epochs, warm-up {first['warmup']}**, both sides. Machine: 2 cores **shared with 4-5 other "
        f"workers' jobs** (1-min load average {min(x[0] for x in loads):.1f}-{max(x[0] for x in loads):.1f} "
        "during the run), so wall time is mostly waiting for a core; **process CPU time** is the comparable "
        "number.",
        "",
        "Same prepared data (`scvi_ext.methods.prepare`, 2000 HVGs or all genes if fewer), same `leiden1`/`leiden2` (Leiden "
        "`flavor='leidenalg'`, 0.5 / 7, clustered once per seed with `random_state=seed` and fed to both), same "
        "epochs, warm-up and seed, torch 1 thread per side; per (seed, dataset) the two sides run one after "
        "the other in the same script, the side that goes first alternating with the seed. Scores: raw "
        "scib-metrics (`scvi_ext.metrics.scib_benchmark`, reference-results.md setting), mean ± sd over seeds. "
        "`reference` = the reference's `obtain_embeddings` output (one latent sample -> PCA 50); `ours "
        "(sample+PCA50)` = our model with that same output form (the like-for-like comparison); `ours (mean)` "
        "= our default output (posterior mean, 256-d). Time = training only.",
        "",
    ]
    names = {
        "X_pca": "PCA (unintegrated)",
        "X_sccraft_reference": "reference",
        "X_sccraft_parity": "ours (sample+PCA50)",
        "X_sccraft": "ours (mean)",
    }
    summary = [
        "| dataset | cells | K | seeds | Total ref | Total ours (sample+PCA50) | Total ours (mean) | "
        "bar (ours >= ref - 0.02) | ref CPU s | ours CPU s | CPU speed-up | wall speed-up |",
        "|---" * 12 + "|",
    ]
    for r in records:
        runs = r["runs"]
        ref_cpu = [run["reference"]["train_cpu_s"] for run in runs]
        our_cpu = [run["ours"]["train_cpu_s"] for run in runs]
        ref_wall = [run["reference"]["train_s"] for run in runs]
        our_wall = [run["ours"]["train_s"] for run in runs]
        tot = {k: _mean(run["scib"][k]["Total"] for run in runs) for k in names}
        ok = [
            ("sample+PCA50", tot["X_sccraft_parity"] >= tot["X_sccraft_reference"] - 0.02),
            ("mean", tot["X_sccraft"] >= tot["X_sccraft_reference"] - 0.02),
        ]
        bar = ", ".join(f"{n}: {'met' if good else 'MISSED'}" for n, good in ok)
        summary.append(
            f"| {r['dataset']} | {r['n_obs']} | {r['n_batches']} | {len(runs)} | "
            f"{_ms(run['scib']['X_sccraft_reference']['Total'] for run in runs)} | "
            f"{_ms(run['scib']['X_sccraft_parity']['Total'] for run in runs)} | "
            f"{_ms(run['scib']['X_sccraft']['Total'] for run in runs)} | {bar} | "
            f"{_mean(ref_cpu):.0f} | {_mean(our_cpu):.0f} | {sum(ref_cpu) / sum(our_cpu):.2f}x | "
            f"{sum(ref_wall) / sum(our_wall):.2f}x |"
        )
        lo = sorted({run["n_leiden1"] for run in runs})
        hi = sorted({run["n_leiden2"] for run in runs})
        out += [
            f"## {r['dataset']} (batch = {r['batch_key']}, label = {r['label_key']}; {r['n_obs']} cells, "
            f"{r['n_vars']} genes, K = {r['n_batches']}, {'/'.join(map(str, lo))} low / "
            f"{'/'.join(map(str, hi))} high clusters over the seeds)",
            "",
        ]
        out += _table_seeds(runs, names) + [""]
        out += [
            "| seed | order | ref CPU s | ours CPU s | CPU ratio | ref wall s | ours wall s | wall ratio | "
            "load before -> after |",
            "|---" * 9 + "|",
        ]
        for run in runs:
            out.append(
                f"| {run['seed']} | {run['order']} | {run['reference']['train_cpu_s']:.1f} | "
                f"{run['ours']['train_cpu_s']:.1f} | {run['speedup_cpu']:.2f}x | "
                f"{run['reference']['train_s']:.1f} | {run['ours']['train_s']:.1f} | {run['speedup_wall']:.2f}x | "
                f"{run['load_before'][0]:.1f} -> "
                f"{run['load_after'][0]:.1f} |"
            )
        out.append("")
    out[len(out) :] = (
        [
            "## Summary",
            "",
            "Speed-ups are ratios of the summed training times over the seeds. Bar: mean Total over seeds.",
            "",
        ]
        + summary
        + [""]
    )
    notes = []
    for r in records:
        runs = r["runs"]
        d = {
            c: _mean(run["scib"]["X_sccraft"][c] - run["scib"]["X_sccraft_reference"][c] for run in runs)
            for c in ("Total", "Bio", "Batch")
        }
        notes.append(f"{r['dataset']}: Bio {d['Bio']:+.3f}, Batch {d['Batch']:+.3f}, Total {d['Total']:+.3f}")
    out += [
        "Notes:",
        "",
        "- The like-for-like comparison (same output form: one latent sample -> PCA 50) is `ours "
        "(sample+PCA50)` vs `reference`. Our default output, the 256-d posterior mean, is a different "
        "embedding: without the sampling noise cell types stay tighter (higher Bio, silhouette) and batches look "
        "less mixed to the kNN-based batch metrics (lower iLISI/kBET), so its Total differs from the reference's "
        "by dataset (mean vs reference: " + "; ".join(notes) + "). Use "
        "`get_latent_representation(give_mean=False, n_pcs=50)` (or the `obtain_embeddings` shim) for the "
        "reference's numbers.",
        "- The reference's peak RSS is not reported: `ru_maxrss` of a subprocess started from this (large) "
        "process inherits the parent's high-water mark, so it is not the reference's own peak.",
        "",
    ]
    (res / "side_by_side.md").write_text("\n".join(out))


def ablation(res: Path) -> None:
    f = res / "ablation_pancreas.json"
    if not f.exists():
        return
    r = json.loads(f.read_text())
    runs = r.get("runs")
    if not runs:
        return
    cmd = ABL_CMD.format(
        epochs=r["epochs"],
        warmup=r["warmup"],
        seeds=",".join(str(run["seed"]) for run in runs),
        n_hvg=r.get("n_hvg", 2000),
    )
    out = [
        f"Reproduce: `{cmd}`",
        "",
        "# scCRAFT triplet-term ablation on cider_pancreas_baron",
        "",
        f"{r['epochs']} epochs (of 150), warm-up {r['warmup']}, d_coef {r['d_coef']}, seeds "
        f"{', '.join(str(run['seed']) for run in runs)} (each seed re-clusters and retrains; mean ± sd), "
        f"{r.get('n_hvg', 2000)} HVGs, {'/'.join(str(run['n_leiden1']) for run in runs)} low- / "
        f"{'/'.join(str(run['n_leiden2']) for run in runs)} high-resolution clusters. 1 torch thread; machine "
        f"shared with other jobs (load {r['load_start'][0]:.1f} at start, {r.get('load_end', [0])[0]:.1f} at end).",
        "",
    ]
    names = {
        "X_pca": "PCA (unintegrated)",
        "X_no_triplet": "no triplet",
        "X_single_resolution": "single resolution",
        "X_dual_resolution": "dual resolution (scCRAFT)",
    }
    out += _table_seeds(runs, names) + [
        "",
        "| variant | triplets per step (last epoch) | discriminator accuracy (last epoch) | kNN batch entropy "
        "(15-NN, /log K; 1 = mixed) | train CPU s |",
        "|---|---|---|---|---|",
        f"| PCA | | | {_ms(run['knn_batch_entropy_pca'] for run in runs)} | |",
    ]
    for k in runs[0]["variants"]:
        vs = [run["variants"][k] for run in runs]
        out.append(
            f"| {k} | {_mean(v['final_n_triplets'] for v in vs):.0f} | "
            f"{_ms(v['final_discriminator_accuracy'] for v in vs)} | "
            f"{_ms(v['knn_batch_entropy'] for v in vs)} | {_mean(v['train_cpu_s'] for v in vs):.0f} |"
        )
    if r.get("findings"):
        out += ["", "## What it shows", "", r["findings"]]
    (res / "ablation.md").write_text("\n".join(out) + "\n")


def profile(res: Path) -> None:
    f = res / "profile_step.json"
    if not f.exists():
        return
    r = json.loads(f.read_text())
    out = [
        f"Reproduce: `{PROF_CMD}`",
        "",
        "# Where a scCRAFT training step spends its time (pancreas, K=6, 2000 genes, 1024-cell minibatch)",
        "",
        f"{r['unit']}; {r['steps']} steps x {r['repeats']} repeats, torch 1 thread, shared machine.",
        "",
        "| part | reference | ours |",
        "|---|---|---|",
    ]
    for k in ["loader", "forward", "discriminator_steps", "triplets", "generator_step"]:
        out.append(f"| {k} | {r['reference'][k]:.3f} | {r['ours'][k]:.3f} |")
    out.append(f"| **sum of parts** | {r['reference_total']:.3f} | {r['ours_total']:.3f} |")
    out.append(
        f"| our full Lightning step (`model.train`, incl. framework) | | "
        f"{r['ours']['lightning_train_per_step']:.3f} |"
    )
    lt = r["ours"]["lightning_train_per_step"]
    out += [
        "",
        f"Per step: reference {r['reference_total']:.2f} CPU s, ours {lt:.2f} CPU s (full Lightning step) -> "
        f"**{r['reference_total'] / lt:.2f}x**. Almost all of the gain is the discriminator loop: the reference "
        "back-propagates each of its 10 discriminator losses through the retained encoder graph (and then discards "
        "the encoder gradients); ours trains the discriminator on the detached latent "
        f"({r['reference']['discriminator_steps']:.2f} -> {r['ours']['discriminator_steps']:.3f} CPU s). Triplet "
        "mining by sampled pair indices instead of enumerating all pairs is ~10x faster but was already small here "
        "(pancreas groups are small; it matters for K=2 / large clusters). What remains in our step is the "
        "forward pass and the generator backward + Adam step (~90 %), dominated by the two p x p NB heads "
        "(8.0 M of the 16.1 M parameters) — the same arithmetic as the reference; the Lightning loop adds "
        f"{lt - r['ours_total']:.2f} CPU s per step.",
    ]
    (res / "profile_step.md").write_text("\n".join(out) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default=str(RES))
    args = parser.parse_args(argv)
    res = Path(args.results)
    side_by_side(res)
    ablation(res)
    profile(res)


if __name__ == "__main__":
    sys.exit(main())
