"""SCBIOT (part B) latent quality vs the OT embedding it is trained on, as a function of training length.

For each dataset the tutorial's query path is reproduced (``tutorials/scbiot_pbmc.py``): every 4th cell is held
out as a query given as raw counts; the other cells are the reference (``prepare`` -> ``integrate(..., "rna")`` ->
Leiden pseudo-labels -> ``build_query_map`` -> ``SCBIOT``); the query is mapped with
``SCBIOT.load_query_data`` (projection into the reference PCA + OT displacement of its neighbours + encoding).
Scores per embedding (reference PCA, OT embedding, SCBIOT latent for each training setting):

* ``ref_knn_acc``: leave-one-out kNN label accuracy on the reference (``scvi_ext.metrics.knn_label_accuracy``);
* ``ref_batch_entropy``: normalised kNN batch entropy on the reference (``scvi_ext.metrics.batch_entropy``);
* ``query_acc``: label of each query cell = majority vote of its 15 nearest reference cells (as the tutorial);
* ``joint_batch_entropy`` / ``ref_query_mixing``: batch entropy of reference + query by batch / by role.

Quality run only (no timing claim; the train seconds are indicative, the box is shared). Usage::

    nice -n 10 python benchmarks/scbiot/latent_quality.py --threads 1 --seeds 0 \
        --out benchmarks/results/scbiot/latent_quality
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_reference import DATASETS  # noqa: E402  (the same three datasets and keys)

DEFAULT_CONFIGS = [
    "15x1024",
    "50x1024",
    "200x1024",
    "15x256",
    "50x256",
    "200x256",
    "15x128",
    "50x128",
    "200x128",
]


def _knn_vote(Z_from: np.ndarray, labels_from: np.ndarray, Z_to: np.ndarray, k: int = 15) -> np.ndarray:
    from scvi_ext.neighbors import knn

    idx, _ = knn(Z_from.astype(np.float32), Z_to.astype(np.float32), k=k)
    # ties go to the label met first among the nearest neighbours (``max(set(r), key=...)`` would depend on the
    # string-hash seed of the process)
    return np.array([Counter(r.tolist()).most_common(1)[0][0] for r in labels_from[idx]])


def _scores(zr, zq, ref, query, batch_key, label_key) -> dict:
    from scvi_ext.metrics import batch_entropy, knn_label_accuracy

    ref_labels = ref.obs[label_key].astype(str).to_numpy()
    truth = query.obs[label_key].astype(str).to_numpy()
    joint = np.vstack([zr, zq])
    lanes = np.concatenate([ref.obs[batch_key].astype(str), query.obs[batch_key].astype(str)])
    role = np.array(["reference"] * len(zr) + ["query"] * len(zq))
    return {
        "ref_knn_acc": round(float(knn_label_accuracy(zr, ref_labels)), 4),
        "ref_batch_entropy": round(float(batch_entropy(zr, ref.obs[batch_key].astype(str))), 4),
        "query_acc": round(float((_knn_vote(zr, ref_labels, zq) == truth).mean()), 4),
        "joint_batch_entropy": round(float(batch_entropy(joint, lanes)), 4),
        "ref_query_mixing": round(float(batch_entropy(joint, role)), 4),
    }


def run_dataset(name: str, data_dir: Path, configs: list[str], seed: int, plan_variants: dict, n_comp: int):
    """Build the reference/query split of one dataset and score every training setting."""
    import anndata as ad
    import scvi

    import scvi_ext.scbiot as scb
    from scvi_ext.methods import prepare
    from scvi_ext.metrics import knn_label_accuracy

    rel, batch_key, label_key = DATASETS[name]
    counts = ad.read_h5ad(data_dir / rel)
    held = np.arange(counts.n_obs) % 4 == 0
    ref = prepare(counts[~held].copy(), batch_key=batch_key)
    scb.integrate(ref, "rna", obsm_key="X_pca", batch_key=batch_key, random_state=seed)
    scb.pseudo_labels(ref, "X_scbiot_ot", resolution=0.8, random_state=seed)
    scb.build_query_map(ref)
    q0 = counts[held].copy()
    out = {
        "n_ref": int(ref.n_obs),
        "n_query": int(q0.n_obs),
        "n_batches": int(ref.obs[batch_key].nunique()),
        "n_labels": int(ref.obs[label_key].nunique()),
        "n_pseudo": int(ref.obs["leiden_scbiot_ot"].nunique()),
        "baselines": {},
        "runs": [],
    }
    # baselines: project the query once (what load_query_data does) using a throwaway 1-epoch model
    scb.SCBIOT.setup_anndata(ref, "X_scbiot_ot", batch_key, pseudo_label_key="leiden_scbiot_ot")
    qb = q0.copy()
    scvi.settings.seed = seed
    tmp = scb.SCBIOT(ref)
    tmp.train(max_epochs=1, batch_size=128, enable_progress_bar=False, accelerator="cpu")
    tmp.get_latent_representation(n_components=n_comp)
    scb.SCBIOT.load_query_data(qb, tmp)
    for key in ("X_pca", "X_scbiot_ot"):
        out["baselines"][key] = _scores(ref.obsm[key], qb.obsm[key], ref, qb, batch_key, label_key)
        print(name, key, out["baselines"][key], flush=True)
    ref_labels = ref.obs[label_key].astype(str).to_numpy()
    for variant, plan_kwargs in plan_variants.items():
        for cfg in configs:
            epochs, bs = (int(v) for v in cfg.split("x"))
            scb.SCBIOT.setup_anndata(ref, "X_scbiot_ot", batch_key, pseudo_label_key="leiden_scbiot_ot")
            scvi.settings.seed = seed
            model = scb.SCBIOT(ref)
            t0, c0 = time.perf_counter(), time.process_time()
            model.train(
                max_epochs=epochs,
                batch_size=bs,
                enable_progress_bar=False,
                accelerator="cpu",
                plan_kwargs=dict(plan_kwargs),
            )
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            zr = model.get_latent_representation(n_components=n_comp)
            q = q0.copy()
            qm = scb.SCBIOT.load_query_data(q, model)
            zq = qm.get_latent_representation(n_components=n_comp)
            row = {
                "variant": variant,
                "epochs": epochs,
                "batch_size": bs,
                "steps": int(model.trainer.global_step) if getattr(model, "trainer", None) else None,
                "best_epoch": getattr(model, "best_epoch_", None),
                "best_nmi_pseudo": round(float(getattr(model, "best_nmi_", float("nan"))), 4),
                "train_wall_s": round(wall, 1),
                "train_cpu_s": round(cpu, 1),
                **_scores(zr, zq, ref, q, batch_key, label_key),
            }
            # read-out diagnostics on the reference (in-sample): un-reduced fused latent and view-1 mean
            row["ref_knn_acc_poe_full"] = round(
                float(knn_label_accuracy(model.get_latent_representation(n_components=None), ref_labels)), 4
            )
            row["ref_knn_acc_mean_view1"] = round(
                float(
                    knn_label_accuracy(
                        model.get_latent_representation(n_components=None, readout="mean_view1"), ref_labels
                    )
                ),
                4,
            )
            out["runs"].append(row)
            print(name, row, flush=True)
    return out


_MEAN_KEYS = ("best_nmi_pseudo", "ref_knn_acc", "query_acc", "ref_batch_entropy", "ref_query_mixing")


def _mean_sd(vals: list[float]) -> str:
    v = np.asarray(vals, dtype=float)
    return f"{v.mean():.3f}" if len(v) == 1 else f"{v.mean():.3f} ± {v.std():.3f}"


def _md(res: dict, cmd: str) -> str:
    lines = [
        f"Command: `{cmd}`",
        "",
        f"Date: {res['date']} | load (uptime): {res['uptime']} | seeds {res['seeds']} | threads {res['threads']} | "
        "shared 2-core box (train seconds indicative only; quality run, no timing claim)",
        "",
        "Tutorial query path: every 4th cell held out as raw counts, mapped with `SCBIOT.load_query_data`; "
        f"latent = `get_latent_representation(n_components={res['n_components']})`. `ref_acc` = leave-one-out "
        "15-NN label accuracy on the reference, `query_acc` = 15-NN vote from reference to query cells, `ent` = "
        "normalised batch entropy (reference), `mix` = reference/query entropy of reference+query. Values are "
        "mean ± sd over seeds (seed of OT, Leiden and model). Variants (training-plan kwargs): "
        + ", ".join(f"`{k}` = `{json.dumps(v)}`" for k, v in res["variants"].items())
        + ".",
        "",
    ]
    for name, by_seed in res["datasets"].items():
        d0 = next(iter(by_seed.values()))
        lines += [
            f"## {name} ({d0['n_ref']} reference / {d0['n_query']} query cells, {d0['n_batches']} batches, "
            f"{d0['n_labels']} labels, {d0['n_pseudo']} pseudo-labels at seed {next(iter(by_seed))})",
            "",
            "| embedding | variant | epochs × batch | steps | best epoch | train NMI | ref_acc | query_acc | ent | mix "
            "| train cpu s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key in d0["baselines"]:
            s = [d["baselines"][key] for d in by_seed.values()]
            lines.append(
                f"| {key} | | | | | | {_mean_sd([x['ref_knn_acc'] for x in s])} | "
                f"{_mean_sd([x['query_acc'] for x in s])} | {_mean_sd([x['ref_batch_entropy'] for x in s])} | "
                f"{_mean_sd([x['ref_query_mixing'] for x in s])} | |"
            )
        groups: dict = {}
        for d in by_seed.values():
            for r in d["runs"]:
                groups.setdefault((r["variant"], r["epochs"], r["batch_size"]), []).append(r)
        for (variant, ep, bs), rs in groups.items():
            m = {k: _mean_sd([r[k] for r in rs]) for k in _MEAN_KEYS}
            lines.append(
                f"| SCBIOT | {variant} | {ep} × {bs} | {rs[0]['steps']} | {','.join(str(r['best_epoch']) for r in rs)} "
                f"| {m['best_nmi_pseudo']} | {m['ref_knn_acc']} | {m['query_acc']} | {m['ref_batch_entropy']} | "
                f"{m['ref_query_mixing']} | {np.mean([r['train_cpu_s'] for r in rs]):.1f} |"
            )
        lines.append("")
    if res.get("notes"):
        lines += ["## Notes", "", *res["notes"], ""]
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    p.add_argument("--datasets", nargs="+", default=["pbmc68k_reduced_counts"], choices=list(DATASETS))
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="EPOCHSxBATCH_SIZE")
    p.add_argument(
        "--grid-configs",
        nargs="*",
        default=[],
        help="extra EPOCHSxBATCH_SIZE settings run only for the first dataset at the first seed",
    )
    p.add_argument(
        "--variants",
        default='{"default": {}}',
        help='JSON {name: plan_kwargs} of training-plan variants, e.g. {"warm10": {"n_warmup_steps": 10}}',
    )
    p.add_argument("--n-components", type=int, default=30)
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of OT, Leiden and the model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--notes", nargs="*", default=[])
    p.add_argument("--out", default="benchmarks/results/scbiot/latent_quality")
    args = p.parse_args()
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(v, str(args.threads))
    import logging

    import torch

    torch.set_num_threads(args.threads)
    for name in ("lightning", "lightning.pytorch", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "seeds": args.seeds,
        "threads": args.threads,
        "n_components": args.n_components,
        "variants": json.loads(args.variants),
        "notes": args.notes,
        "datasets": {},
    }
    for name in args.datasets:
        res["datasets"][name] = {}
        for seed in args.seeds:
            first = name == args.datasets[0] and seed == args.seeds[0]
            configs = args.configs + (
                [c for c in args.grid_configs if c not in args.configs] if first else []
            )
            res["datasets"][name][str(seed)] = run_dataset(
                name, Path(args.data_dir), configs, seed, res["variants"], args.n_components
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    cmd = "nice -n 10 python benchmarks/scbiot/latent_quality.py " + " ".join(
        f"'{a}'" if (" " in a or "{" in a) else a for a in __import__("sys").argv[1:]
    )
    out.with_suffix(".md").write_text(_md(res, cmd))
    print(f"wrote {out}.json / .md")


if __name__ == "__main__":
    main()
