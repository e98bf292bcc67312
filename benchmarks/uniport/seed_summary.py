"""Mean over seeds of ``side_by_side.py`` quality results (one JSON per seed) -> a markdown table.

Usage::

    python benchmarks/uniport/seed_summary.py --dataset cider_pancreas_baron \
        --inputs side_by_side_pancreas side_by_side_pancreas_seed1 side_by_side_pancreas_seed2 \
        --out-name side_by_side_pancreas_seeds

Reads ``benchmarks/results/uniport/<input>.json`` (written by ``side_by_side.py`` with
``--also-no-early-stopping --also-epoch-rule``) and writes ``<out-name>.md`` / ``.json`` next to them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "results" / "uniport"
ROWS = [
    ("X_uniport", "ours", "ours (default: early_stopping_monitor='auto')"),
    ("X_uniport_reference", "reference", "reference uniport==1.3"),
    ("X_uniport_epoch", "ours, epoch rule", "ours, early_stopping_monitor='epoch' (reference rule)"),
    ("X_uniport_full", "ours, no early stop", "ours, early stopping off"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--inputs", nargs="+", required=True, help="result stems, one per seed")
    p.add_argument("--out-name", required=True)
    args = p.parse_args()
    per_seed = []
    for stem in args.inputs:
        entry = json.loads((OUT / f"{stem}.json").read_text())[args.dataset]
        per_seed.append(entry)
    seeds = [e["seed"] for e in per_seed]
    table: dict[str, dict] = {}
    for key, lt_key, label in ROWS:
        if not all(key in e["scib"] for e in per_seed):
            continue
        totals = [float(e["scib"][key]["Total"]) for e in per_seed]
        accs = [float(e["label_transfer"].get(lt_key, {}).get("accuracy", np.nan)) for e in per_seed]
        f1s = [float(e["label_transfer"].get(lt_key, {}).get("macro_f1", np.nan)) for e in per_seed]
        table[label] = {"total": totals, "accuracy": accs, "macro_f1": f1s}
    epochs = [e["epochs"] for e in per_seed]
    (OUT / f"{args.out_name}.json").write_text(
        json.dumps({"dataset": args.dataset, "seeds": seeds, "rows": table, "epochs": epochs}, indent=2)
    )
    cmd = (
        f"python benchmarks/uniport/seed_summary.py --dataset {args.dataset} --inputs {' '.join(args.inputs)} "
        f"--out-name {args.out_name}"
    )
    lines = [
        f"`{cmd}`",
        "",
        f"# uniPort on {args.dataset}: scib Total over seeds {seeds} ({per_seed[0]['iterations']} iterations)",
        "",
        f"Date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Summary of the per-seed files "
        f"{', '.join(f'`{s}.md`' for s in args.inputs)} (each begins with its command).",
        "",
        "| embedding | " + " | ".join(f"Total seed {s}" for s in seeds) + " | mean Total | mean kNN acc | "
        "mean macro-F1 |",
        "|---|" + "---|" * (len(seeds) + 3),
    ]
    for label, row in table.items():
        lines.append(
            f"| {label} | "
            + " | ".join(f"{v:.3f}" for v in row["total"])
            + f" | **{np.mean(row['total']):.3f}** | {np.nanmean(row['accuracy']):.3f} | "
            f"{np.nanmean(row['macro_f1']):.3f} |"
        )
    lines += ["", "Epochs run (at most " + str(epochs[0]["max_epochs"]) + "):", ""]
    for s, ep in zip(seeds, epochs, strict=True):
        ref = ep["reference_early_stop_epoch"]
        lines.append(
            f"- seed {s}: ours {ep['ours']}{' (fired)' if ep['ours_early_stopped'] else ''} "
            f"[monitor {ep.get('ours_monitor')!r}]; reference {ref if ref else ep['max_epochs']}"
            f"{' (fired)' if ref else ''}; ours epoch rule {ep.get('ours_epoch_rule')}"
            f"{' (fired)' if ep.get('ours_epoch_rule_early_stopped') else ''}; ours no early stop "
            f"{ep.get('ours_no_early_stop')}"
        )
    (OUT / f"{args.out_name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
