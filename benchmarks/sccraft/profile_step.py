"""Where one scCRAFT training step spends its time: reference code vs scvi_ext, process CPU time, 1 thread.

Same prepared pancreas data and pseudo-labels for both sides. For each side, ``--steps`` training steps are
timed part by part (data loading, forward pass, the 10 discriminator steps, triplet mining + loss, generator
backward + Adam step), ``--repeats`` times; the best repeat per part is reported (the machine is shared).
Our side runs the module's own pieces in a plain loop (what ``SCCRAFTTrainingPlan`` does per step), and in
addition the full Lightning ``model.train`` per step, so the framework overhead is visible.

Example
-------
    python benchmarks/sccraft/profile_step.py --reference-python /work/refenv/sccraft/bin/python \
        --reference-src /work/refenv/sccraft_src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT.parent / "shared" / "data"
PARTS = ["loader", "forward", "discriminator_steps", "triplets", "generator_step"]


def ours(adata, steps: int, repeats: int, seed: int) -> dict:
    import numpy as np
    import scvi
    import torch

    from scvi_ext.sccraft import SCCRAFT
    from scvi_ext.train import mine_triplets, triplet_loss

    scvi.settings.seed = seed
    SCCRAFT.setup_anndata(adata, batch_key="sample")
    model = SCCRAFT(adata)
    mod = model.module
    from scvi_ext.sccraft._sampler import BalancedBatchDataModule

    loader = BalancedBatchDataModule(model.adata_manager, seed=seed).train_dataloader()
    disc = mod.discriminator
    gen_params = [p for n, p in mod.named_parameters() if not n.startswith("discriminator.")]
    opt_g = torch.optim.Adam(gen_params, lr=1e-3, eps=1e-8)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3, eps=1e-8)
    best = {p: float("inf") for p in PARTS}
    for _ in range(repeats):
        t = dict.fromkeys(PARTS, 0.0)
        done = 0
        while done < steps:
            c = time.process_time()
            batches = list(loader)
            t["loader"] += time.process_time() - c
            for tensors in batches:
                if done >= steps:
                    break
                c0 = time.process_time()
                inf, gen = mod.inference(**mod._get_inference_input(tensors)), None
                gen = mod.generative(**mod._get_generative_input(tensors, inf))
                out = mod.loss(tensors, inf, gen, triplet_weight=0.0)
                c1 = time.process_time()
                zd, b = inf["z"].detach(), tensors["batch"]
                for _ in range(10):
                    opt_d.zero_grad()
                    disc.loss(zd, b).backward()
                    opt_d.step()
                c2 = time.process_time()
                a, p, n = mine_triplets(
                    None,
                    tensors["batch"].reshape(-1),
                    tensors["sccraft_low"].reshape(-1),
                    fine_ids=tensors["sccraft_high"].reshape(-1),
                    strategy="sccraft",
                )
                z = inf["z"]
                tri = triplet_loss(z[a], z[p], z[n], margin=5.0)
                c3 = time.process_time()
                for q in disc.parameters():
                    q.requires_grad_(False)
                loss = out.loss + tri + 0.2 * disc.adversarial_loss(z, b, mode="neg_ce")
                opt_g.zero_grad()
                loss.backward()
                opt_g.step()
                for q in disc.parameters():
                    q.requires_grad_(True)
                c4 = time.process_time()
                t["forward"] += c1 - c0
                t["discriminator_steps"] += c2 - c1
                t["triplets"] += c3 - c2
                t["generator_step"] += c4 - c3
                done += 1
        for k in PARTS:
            best[k] = min(best[k], t[k] / steps)
    # full Lightning loop, per step (one epoch = 3 steps for K = 6)
    lightning = float("inf")
    for _ in range(repeats):
        c = time.process_time()
        model.train(max_epochs=1, warmup_epochs=0, accelerator="cpu", progress_bar=False, seed=seed)
        lightning = min(lightning, (time.process_time() - c) / 3)
    best["lightning_train_per_step"] = lightning
    _ = np  # noqa
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference-python", required=True)
    parser.add_argument("--reference-src", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sccraft"))
    args = parser.parse_args(argv)

    import anndata as ad
    import torch

    from scvi_ext.methods import prepare
    from scvi_ext.sccraft import cluster_pseudo_labels

    torch.set_num_threads(1)
    adata = prepare(ad.read_h5ad(DATA / "cider_pancreas_baron" / "cider_pancreas_baron.h5ad"), "sample")
    cluster_pseudo_labels(adata, flavor="leidenalg")
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "in.h5ad"
        small = ad.AnnData(X=adata.X.copy(), obs=adata.obs[["sample", "leiden1", "leiden2"]].copy())
        small.obs["sample"] = small.obs["sample"].astype(str)
        small.write_h5ad(h5)
        env = {
            **os.environ,
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": str(args.reference_src),
            "OMP_NUM_THREADS": "1",
        }
        res = Path(tmp) / "ref.json"
        proc = subprocess.run(
            [
                args.reference_python,
                str(HERE / "_reference_driver.py"),
                "profile",
                str(h5),
                str(res),
                "sample",
                str(args.steps),
                str(args.repeats),
                str(args.seed),
                "1",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        ref_runs = json.loads(res.read_text())
    ref = {k: min(r[k] for r in ref_runs) for k in PARTS}
    mine = ours(adata.copy(), args.steps, args.repeats, args.seed)
    record = {
        "dataset": "cider_pancreas_baron",
        "unit": "CPU seconds per training step (best of repeats)",
        "steps": args.steps,
        "repeats": args.repeats,
        "reference": ref,
        "ours": mine,
        "reference_total": sum(ref.values()),
        "ours_total": sum(mine[k] for k in PARTS),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile_step.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    sys.exit(main())
