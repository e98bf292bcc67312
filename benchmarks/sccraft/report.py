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
    "--reference-src /work/refenv/sccraft_src --epochs 20 --warmup 7 && python benchmarks/sccraft/report.py"
)
ABL_CMD = "python benchmarks/sccraft/ablation.py --epochs 8 --warmup 3 && python benchmarks/sccraft/report.py"
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


def side_by_side(res: Path) -> None:
    files = sorted(res.glob("side_by_side_*.json"))
    if not files:
        return
    out = [
        f"Reproduce: `{SBS_CMD}`",
        "",
        "# scCRAFT: scvi_ext vs the reference code (ch2343/scCRAFT @ 02ed693)",
        "",
    ]
    first = json.loads(files[0].read_text())
    out += [
        f"Same prepared data (`scvi_ext.methods.prepare`, 2000 HVGs), same `leiden1`/`leiden2` (Leiden "
        f"`flavor='leidenalg'`, 0.5 / 7, clustered once and fed to both), **{first['epochs']} of the 150 default "
        f"epochs, warm-up {first['warmup']}** (CPU budget on a shared 2-core machine; reference-results.md used "
        "50/16), seed "
        f"{first['seed']}, torch 1 thread per side, sides run one after the other. Scores: raw scib-metrics "
        "(`scvi_ext.metrics.scib_benchmark`, reference-results.md setting). `reference` = the reference's "
        "`obtain_embeddings` output (one latent sample -> PCA 50); `ours (mean)` = our default output "
        "(posterior mean, 256-d); `ours (sample+PCA50)` = our model with the reference's output form.",
        "",
        "Time = training only. The machine was shared with other jobs (load 12-20 on 2 cores), so wall time "
        "is mostly waiting; **process CPU time** is the comparable number.",
        "",
    ]
    names = {
        "X_pca": "PCA (unintegrated)",
        "X_sccraft_reference": "reference",
        "X_sccraft": "ours (mean)",
        "X_sccraft_parity": "ours (sample+PCA50)",
    }
    summary = [
        "| dataset | cells | K | ref CPU s | ours CPU s | CPU speed-up | ref wall s | ours wall s | "
        "Total ours-ref | Bio ours-ref | Batch ours-ref |",
        "|---" * 11 + "|",
    ]
    for f in files:
        r = json.loads(f.read_text())
        s = r["scib"]
        d = {c: s["X_sccraft"][c] - s["X_sccraft_reference"][c] for c in ("Total", "Bio", "Batch")}
        summary.append(
            f"| {r['dataset']} | {r['n_obs']} | {r['n_batches']} | {r['reference']['train_cpu_s']:.0f} | "
            f"{r['ours']['train_cpu_s']:.0f} | {r['speedup_cpu']:.2f}x | {r['reference']['train_s']:.0f} | "
            f"{r['ours']['train_s']:.0f} | {d['Total']:+.3f} | {d['Bio']:+.3f} | {d['Batch']:+.3f} | "
            + " / ".join(
                f"{s['X_sccraft_parity'][c] - s['X_sccraft_reference'][c]:+.3f}"
                for c in ("Total", "Bio", "Batch")
            )
            + " |"
        )
        out += [
            f"## {r['dataset']} (batch = {r['batch_key']}, label = {r['label_key']}; {r['n_obs']} cells, "
            f"K = {r['n_batches']}, {r['n_leiden1']} low / {r['n_leiden2']} high clusters)",
            "",
        ]
        out += _table(s, names) + [""]
        if r.get("note"):
            out += [f"Note: {r['note']}.", ""]
        out += [
            f"Training: reference {r['reference']['train_cpu_s']:.1f} CPU s ({r['reference']['train_s']:.1f} s "
            f"wall, peak RSS {r['reference']['peak_rss_mib']:.0f} MiB), ours {r['ours']['train_cpu_s']:.1f} CPU s "
            f"({r['ours']['train_s']:.1f} s wall) -> {r['speedup_cpu']:.2f}x (CPU), {r['speedup_wall']:.2f}x (wall).",
            "",
        ]
    out[len(out) :] = ["## Summary", ""] + summary + [""]
    (res / "side_by_side.md").write_text("\n".join(out))


def ablation(res: Path) -> None:
    f = res / "ablation_pancreas.json"
    if not f.exists():
        return
    r = json.loads(f.read_text())
    out = [
        f"Reproduce: `{ABL_CMD}`",
        "",
        "# scCRAFT triplet-term ablation on cider_pancreas_baron",
        "",
        f"{r['epochs']} epochs, warm-up {r['warmup']}, d_coef {r['d_coef']}, seed {r['seed']}, 2000 HVGs, "
        f"{r['n_leiden1']} low- / {r['n_leiden2']} high-resolution clusters. One seed: on 350 cells, differences "
        "under ~0.02 are within seed noise (reference-results.md).",
        "",
    ]
    names = {
        "X_pca": "PCA (unintegrated)",
        "X_no_triplet": "no triplet",
        "X_single_resolution": "single resolution",
        "X_dual_resolution": "dual resolution (scCRAFT)",
    }
    out += _table(r["scib"], names) + [
        "",
        "| variant | triplets per step (last epoch) | discriminator accuracy (last epoch) | train CPU s |",
        "|---|---|---|---|",
    ]
    for k, v in r["variants"].items():
        out.append(
            f"| {k} | {v['final_n_triplets']:.0f} | {v['final_discriminator_accuracy']:.3f} | "
            f"{v['train_cpu_s']:.0f} |"
        )
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
