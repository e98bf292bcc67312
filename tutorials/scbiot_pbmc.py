# %% [markdown]
# # scBIOT on PBMCs: OT refinement of the PCA, the SCBIOT model, and label transfer
#
# scBIOT (Hai Hui Lab) integrates batches in a low-dimensional embedding. **Part A** (`integrate_ot` /
# `integrate`) moves cells with entropic unbalanced optimal transport between batch prototypes, damped near
# batch bridges and guarded against distortions; it works on any embedding (PCA, ATAC LSI, a model latent).
# **Part B** (`SCBIOT`) is a dual-view prototype VAE trained on the OT output with Leiden pseudo-labels.
#
# Data: `pbmc68k_reduced_counts` (700 cells, 8 lanes, 10 labels) from `../shared/data`. Runs on a CPU in a
# few minutes; figures go to `out/tutorials/`.

# %%
from collections import Counter
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
import torch

import scvi_ext.scbiot as scb
from scvi_ext.methods import prepare
from scvi_ext.metrics import batch_entropy, knn_label_accuracy
from scvi_ext.neighbors import knn

torch.set_num_threads(2)
DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data"
    if "__file__" in globals()
    else Path("../shared/data")
)
OUT = Path("out/tutorials")
OUT.mkdir(parents=True, exist_ok=True)
adata = prepare(
    ad.read_h5ad(DATA / "pbmc68k_reduced_counts" / "pbmc68k_reduced_counts.h5ad"), batch_key="lane"
)
print(adata)

# %% [markdown]
# ## Part A: OT refinement of the PCA (RNA preset)
# The returned metrics are those of the best iterate: batch mixing `mix` (mean kNN batch entropy), `overlap0`
# (kNN overlap with the input), graph `strain`, trustworthiness `tw` and the selected iteration `it`.

# %%
metrics = scb.integrate(adata, "rna", obsm_key="X_pca", batch_key="lane", verbose=True)
print({k: metrics[k] for k in ("mix0", "mix", "overlap0", "strain", "tw", "it")})
for key in ("X_pca", "X_scbiot_ot"):
    print(
        key,
        "batch entropy",
        round(batch_entropy(adata.obsm[key], adata.obs["lane"]), 3),
        "kNN label acc",
        round(knn_label_accuracy(adata.obsm[key], adata.obs["bulk_labels"]), 3),
    )

# %% [markdown]
# ## Part B: the SCBIOT model on the OT embedding
# Pseudo-labels = Leiden clusters of the OT embedding; the model keeps the epoch with the best train NMI
# against them; the latent fuses the two views' posteriors (product of experts) and is reduced by PCA.
# Training length is counted in optimiser steps: with 700 cells, `batch_size=128` gives ~5 steps per epoch, so
# 50 epochs are ~250 steps. Much shorter runs (e.g. 15 epochs at `batch_size=1024`, one step per epoch) leave
# the latent clearly below the OT embedding it is trained on (`benchmarks/results/scbiot/latent_quality.md`).

# %%
scb.pseudo_labels(adata, "X_scbiot_ot", resolution=0.8)
scb.SCBIOT.setup_anndata(adata, "X_scbiot_ot", "lane", pseudo_label_key="leiden_scbiot_ot")
model = scb.SCBIOT(adata)
model.train(max_epochs=50, batch_size=128, enable_progress_bar=True)
adata.obsm["X_scbiot"] = model.get_latent_representation(n_components=30)
print("best epoch", model.best_epoch_, "train NMI vs pseudo-labels", round(model.best_nmi_, 3))
print(
    "SCBIOT latent: batch entropy",
    round(batch_entropy(adata.obsm["X_scbiot"], adata.obs["lane"]), 3),
    "kNN label acc",
    round(knn_label_accuracy(adata.obsm["X_scbiot"], adata.obs["bulk_labels"]), 3),
)

# %%
fig, axes = plt.subplots(2, 3, figsize=(15, 9))
for j, key in enumerate(("X_pca", "X_scbiot_ot", "X_scbiot")):
    sc.pp.neighbors(adata, use_rep=key, key_added=f"nn_{key}")
    sc.tl.umap(adata, neighbors_key=f"nn_{key}", random_state=0)
    adata.obsm[f"umap_{key}"] = adata.obsm["X_umap"].copy()
    for i, col in enumerate(("lane", "bulk_labels")):
        sc.pl.embedding(
            adata,
            f"umap_{key}",
            color=col,
            ax=axes[i, j],
            show=False,
            title=f"{key}: {col}",
            legend_loc=None if col == "lane" else "right margin",
        )
fig.tight_layout()
fig.savefig(OUT / "scbiot_pbmc_umaps.png", dpi=110)

# %% [markdown]
# ## Label transfer (supBIOT-like)
# Hide the labels of two lanes and transfer them from the others on the OT embedding.

# %%
lanes = adata.obs["lane"].astype(str)
query_lanes = sorted(lanes.unique())[:2]
adata.obs["partial"] = np.where(lanes.isin(query_lanes), "unknown", adata.obs["bulk_labels"].astype(str))
res = scb.transfer_labels(adata, label_key="partial", use_rep="X_scbiot_ot")
q = lanes.isin(query_lanes).to_numpy()
acc = (adata.obs["pred_cell_type"].to_numpy()[q] == adata.obs["bulk_labels"].astype(str).to_numpy()[q]).mean()
print(f"query cells {q.sum()}, accuracy {acc:.3f}, median confidence {res['pred_confidence'].median():.2f}")

# %% [markdown]
# ## Query mapping from counts (`SCBIOT.load_query_data`)
# Build a reference from 3/4 of the cells (prepare -> OT -> pseudo-labels -> SCBIOT) and record how counts are
# projected into its PCA (`build_query_map`: gene order, normalisation, centring and loadings; saved with the
# model). The held-out 1/4 comes in as raw counts: `load_query_data` projects it into the reference PCA, gives
# each query cell the OT displacement of its reference neighbours of the same lane, and encodes it with the
# trained network — nothing is refitted. (For a query with a new, strong batch effect, run `integrate_ot` on
# reference + query together instead; `fix_reference=True` then keeps a reference batch's coordinates
# unchanged.)

# %%
counts = ad.read_h5ad(DATA / "pbmc68k_reduced_counts" / "pbmc68k_reduced_counts.h5ad")
held = np.arange(counts.n_obs) % 4 == 0
ref = prepare(counts[~held].copy(), batch_key="lane")
scb.integrate(ref, "rna", obsm_key="X_pca", batch_key="lane")
scb.pseudo_labels(ref, "X_scbiot_ot", resolution=0.8)
scb.build_query_map(ref)
scb.SCBIOT.setup_anndata(ref, "X_scbiot_ot", "lane", pseudo_label_key="leiden_scbiot_ot")
ref_model = scb.SCBIOT(ref)
ref_model.train(max_epochs=50, batch_size=128, enable_progress_bar=False)
Z_ref = ref_model.get_latent_representation(n_components=30)
ref_model.save(OUT / "scbiot_pbmc_reference", overwrite=True, save_anndata=True)

query = counts[held].copy()  # raw counts only: no PCA, no OT embedding
q_model = scb.SCBIOT.load_query_data(query, str(OUT / "scbiot_pbmc_reference"))
Z_query = q_model.get_latent_representation(n_components=30)
print("query obsm written:", sorted(query.obsm.keys()), "latent", Z_query.shape)


# %%
def knn_vote(Z_from, labels_from, Z_to, k=15):
    idx, _ = knn(Z_from.astype(np.float32), Z_to.astype(np.float32), k=k)
    # majority label of the k nearest reference cells; a tie goes to the label met first (nearest)
    return np.array([Counter(r.tolist()).most_common(1)[0][0] for r in labels_from[idx]])


ref_labels = ref.obs["bulk_labels"].astype(str).to_numpy()
truth = query.obs["bulk_labels"].astype(str).to_numpy()
for name, zr, zq in (
    ("PCA (projected)", ref.obsm["X_pca"], query.obsm["X_pca"]),
    ("OT (displaced)", ref.obsm["X_scbiot_ot"], query.obsm["X_scbiot_ot"]),
    ("SCBIOT latent", Z_ref, Z_query),
):
    acc = (knn_vote(zr, ref_labels, zq) == truth).mean()
    print(f"{name:16s} query kNN label accuracy {acc:.3f}")
joint = np.vstack([Z_ref, Z_query])
lanes_joint = np.concatenate([ref.obs["lane"].astype(str), query.obs["lane"].astype(str)])
role = np.array(["reference"] * len(Z_ref) + ["query"] * len(Z_query))
print(
    "batch entropy (lanes) of reference + query latent",
    round(batch_entropy(joint, lanes_joint), 3),
    "| reference/query mixing",
    round(batch_entropy(joint, role), 3),
)
