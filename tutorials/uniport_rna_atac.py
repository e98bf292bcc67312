# %% [markdown]
# # uniPort: RNA + ATAC integration and label transfer
#
# uniPort (Cao et al., *Nat. Commun.* 2022) couples a VAE that reads the features shared by all datasets
# with a minibatch **unbalanced optimal transport** term between the datasets' latent Gaussians. This
# tutorial runs `scvi_ext.uniport.UniPort` on
#
# 1. unpaired bone-marrow scRNA-seq + scATAC-seq (ATAC as gene activity; `liger_bmmc_rna_atac`, 340 + 340
#    cells — **tiny and unlabelled**, so we look at mixing and at RNA predicted from ATAC cells), and
# 2. label transfer from human to mouse pancreas (`cider_pancreas_baron`, labelled) through kNN in the latent
#    and through the OT plan.
#
# Run with `python tutorials/uniport_rna_atac.py`; figures go to `out/tutorials/`. A few hundred
# iterations on CPU (the reference default is 30,000), so expect a rough but real integration.

# %%
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
import scvi
import torch

from scvi_ext.metrics import batch_entropy
from scvi_ext.uniport import UniPort, prepare_anndata

torch.set_num_threads(1)
scvi.settings.seed = 0
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path("out/tutorials")
OUT.mkdir(parents=True, exist_ok=True)
ITERATIONS = 300

# %% [markdown]
# ## 1. RNA + ATAC gene activity (mode `h`)
# `prepare_anndata` builds the common block (shared genes, normalised, log1p, MaxAbs per dataset) and each
# dataset's own block (its HVGs), exactly as the reference pipeline. The last dataset (RNA) is the OT reference.

# %%
rna = ad.read_h5ad(DATA / "liger_bmmc_rna_atac" / "bmmc_rna.h5ad")
atac = ad.read_h5ad(DATA / "liger_bmmc_rna_atac" / "bmmc_atac_gene_activity.h5ad")
adata = prepare_anndata({"atac": atac, "rna": rna})
print(adata)
UniPort.setup_anndata(adata, source_key="source")
model = UniPort(adata)
model.train(max_iterations=ITERATIONS, save_ot=True, enable_progress_bar=False)
adata.obsm["X_uniport"] = model.get_latent_representation()
print(
    "kNN batch entropy (1 = fully mixed):",
    round(batch_entropy(adata.obsm["X_uniport"], adata.obs["source"]), 3),
)

# %%
sc.pp.neighbors(adata, use_rep="X_uniport")
sc.tl.umap(adata, random_state=0)
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
sc.pl.umap(adata, color="source", ax=axes[0], show=False, title="uniPort latent: dataset")
hist = model.history
axes[1].plot(hist["ot_loss_train"].to_numpy(float), label="OT term")
axes[1].set_xlabel("epoch")
axes[1].set_title("minibatch UOT term")
axes[1].legend()
fig.tight_layout()
fig.savefig(OUT / "uniport_bmmc_rna_atac.png", dpi=110)

# %% [markdown]
# **Prediction**: decode the ATAC cells' latent codes with the RNA dataset's own decoder, giving RNA-like
# profiles (in RNA's scaled log space) for cells that were only measured by ATAC.

# %%
atac_rows = (adata.obs["source"] == "atac").to_numpy()
rna_pred = model.predict("rna", latent=adata.obsm["X_uniport"][atac_rows])
print("predicted RNA for ATAC cells:", rna_pred.shape)

# %% [markdown]
# ## 2. Label transfer: human -> mouse pancreas
# Each species is one dataset; human is the reference, so the plan maps mouse cells onto human cells.

# %%
panc = ad.read_h5ad(DATA / "cider_pancreas_baron" / "cider_pancreas_baron.h5ad")
species = panc.obs["species"].astype(str)
datasets = {"mouse": panc[species == "mouse"].copy(), "human": panc[species == "human"].copy()}
pa = prepare_anndata(datasets, n_common_hvg=2000, use_specific=False)
pa.obs["cell_type"] = np.concatenate([datasets[k].obs["cell_type"].astype(str).to_numpy() for k in datasets])
UniPort.setup_anndata(pa, source_key="source")
pmodel = UniPort(pa)
pmodel.train(max_iterations=ITERATIONS, save_ot=True, enable_progress_bar=False)
truth = pa.obs.loc[pa.obs["source"] == "mouse", "cell_type"].to_numpy()
acc = {}
for method in ("knn", "ot"):
    pred = pmodel.transfer_labels("cell_type", method=method)["predicted"].to_numpy()
    acc[method] = float((pred == truth).mean())
chance = float(np.max(np.unique(truth, return_counts=True)[1]) / len(truth))
print("mouse label-transfer accuracy:", acc, "majority-class baseline:", round(chance, 3))

# %%
fig, ax = plt.subplots(figsize=(4, 3))
ax.bar(["majority", "kNN latent", "OT plan"], [chance, acc["knn"], acc["ot"]], color=["grey", "C0", "C1"])
ax.set_ylim(0, 1)
ax.set_ylabel("accuracy on mouse cells")
ax.set_title("uniPort label transfer human -> mouse")
fig.tight_layout()
fig.savefig(OUT / "uniport_pancreas_label_transfer.png", dpi=110)
print("figures written to", OUT)

# %% [markdown]
# **The same from the command line.** `scvi-ext transfer-labels` runs this workflow on raw counts: one file
# with a dataset column (or an `.h5mu` with one modality per dataset), the labelled dataset as the OT
# reference, kNN in the latent or the OT plan. `scvi-ext deconvolve` does the spot deconvolution (spots x
# genes + labelled cells x genes -> spot x cell-type proportions):
#
# ```bash
# scvi-ext transfer-labels --input pancreas.h5ad --source-key species --reference human \
#     --labels-key cell_type --method ot --out out/pancreas_transfer
# scvi-ext deconvolve --spots pdac_a_st1_spots.h5ad --cells pdac_a_indrop_sc.h5ad \
#     --labels-key cell_type --out out/pdac_deconvolution
# ```
#
# They write `predicted_labels.csv` + `transferred.h5ad`, and `proportions.csv` + `deconvolved.h5ad`.
