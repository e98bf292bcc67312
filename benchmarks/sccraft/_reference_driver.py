"""Driver run with the *reference* scCRAFT's interpreter (``--reference-python``); calls only its public API.

Usage (done by side_by_side.py / profile_step.py; not imported by scvi_ext):
    python _reference_driver.py train IN.h5ad OUT_PREFIX BATCH_KEY EPOCHS WARMUP SEED THREADS
    python _reference_driver.py profile IN.h5ad OUT.json BATCH_KEY N_STEPS N_REPEATS SEED THREADS

``train`` writes OUT_PREFIX.npy (``obtain_embeddings`` output: sampled z -> PCA 50) and OUT_PREFIX.json
(training wall and CPU time, peak RSS). ``profile`` times (process CPU time) the parts of one training step of the reference's
``SCIntegrationModel`` (forward, its 10 discriminator steps, triplet creation, generator step).
The reference package must be importable (put its source folder on PYTHONPATH).
"""

from __future__ import annotations

import json
import resource
import sys
import time

import anndata as ad
import numpy as np
import torch


def _load(path: str):
    adata = ad.read_h5ad(path)
    for key in ("leiden1", "leiden2"):
        adata.obs[key] = adata.obs[key].astype("category")
    return adata


def train(path, prefix, batch_key, epochs, warmup, seed, threads):
    from scCRAFT.model import obtain_embeddings, train_integration_model

    torch.set_num_threads(int(threads))
    torch.manual_seed(int(seed))
    np.random.seed(int(seed))  # noqa: NPY002 - the reference draws from the legacy global RNG
    adata = _load(path)
    t0, c0 = time.perf_counter(), time.process_time()
    vae = train_integration_model(adata, batch_key=batch_key, epochs=int(epochs), warmup_epoch=int(warmup))
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    obtain_embeddings(adata, vae, dim=50, pca=True, seed=int(seed))
    np.save(prefix + ".npy", np.asarray(adata.obsm["X_scCRAFT"], dtype=np.float32))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    with open(prefix + ".json", "w") as fh:
        json.dump({"train_s": train_s, "train_cpu_s": train_cpu_s, "peak_rss_mib": rss}, fh)


def profile(path, out, batch_key, n_steps, n_repeats, seed, threads):
    import torch.nn.functional as F
    from scCRAFT.model import SCIntegrationModel, create_triplets, generate_balanced_dataloader, set_seed

    torch.set_num_threads(int(threads))
    torch.manual_seed(int(seed))
    adata = _load(path)
    model = SCIntegrationModel(adata, batch_key, 256)
    opt_g = torch.optim.Adam(model.VAE.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(model.D_Z.parameters(), lr=1e-3)
    results = []
    for rep in range(int(n_repeats)):
        set_seed(rep)
        t = {
            "loader": 0.0,
            "forward": 0.0,
            "discriminator_steps": 0.0,
            "triplets": 0.0,
            "generator_step": 0.0,
        }
        steps = 0
        while steps < int(n_steps):
            t0 = time.process_time()
            loader = generate_balanced_dataloader(adata, batch_size=512, batch_key=batch_key)
            t["loader"] += time.process_time() - t0
            for x, v, lo, hi in loader:
                if steps >= int(n_steps):
                    break
                t0 = time.process_time()
                onehot = F.one_hot(v, model.v_dim).float()
                rec, kl, z, mu = model.VAE(x, onehot)
                rec = torch.clamp(rec, max=1e5)
                loss_cos = (1 - torch.sum(F.normalize(mu, p=2) * F.normalize(x, p=2), 1)).mean()
                loss_vae = rec.mean() + 0.005 * kl.mean()
                t1 = time.process_time()
                for _ in range(10):
                    opt_d.zero_grad()
                    ld = model.D_Z(z, v)
                    ld.backward(retain_graph=True)
                    opt_d.step()
                t2 = time.process_time()
                tri = create_triplets(z, lo, hi, v, margin=5)
                t3 = time.process_time()
                opt_g.zero_grad()
                loss = -0.2 * model.D_Z(z, v, generator=False) + loss_vae + tri + 20 * loss_cos
                loss.backward()
                opt_g.step()
                t4 = time.process_time()
                t["forward"] += t1 - t0
                t["discriminator_steps"] += t2 - t1
                t["triplets"] += t3 - t2
                t["generator_step"] += t4 - t3
                steps += 1
        results.append({k: v / int(n_steps) for k, v in t.items()})
    with open(out, "w") as fh:
        json.dump(results, fh)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"train": train, "profile": profile}[mode](*args)
