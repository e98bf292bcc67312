# %% [markdown]
# # sysVI: integrating human and mouse pancreas (cross-species "systems")
#
# sysVI (Hrovatin, Moinfar et al., BMC Genomics 2025) is a conditional VAE on log-normalised expression with
# a **VampPrior** and a **latent cycle-consistency** loss. The *system* (here: species) is the strong batch
# effect that the cycle loss switches; weaker effects (samples) are ordinary cVAE conditions.
#
# Data: `../shared/data/cider_pancreas_baron` (350 cells, 4 human + 2 mouse samples, one-to-one orthologues).
# Run from the repository root: `python tutorials/sysvi_cross_species_pancreas.py`
# (`SYSVI_TUTORIAL_EPOCHS=400` for scvi-tools' default number of epochs; default here 100 to stay quick on CPU).
# Figures go to `out/tutorials/`.

# %%
import os
from pathlib import Path

import anndata as ad
import numpy as np
import scvi
import torch

from scvi_ext.methods import prepare
from scvi_ext.metrics import fast_scores
from scvi_ext.plotting import plot_umaps
from scvi_ext.sysvi import SysVI

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "tutorials"
OUT.mkdir(parents=True, exist_ok=True)
EPOCHS = int(os.environ.get("SYSVI_TUTORIAL_EPOCHS", "100"))
raw = ad.read_h5ad(ROOT.parent / "shared" / "data" / "cider_pancreas_baron" / "cider_pancreas_baron.h5ad")

# %% [markdown]
# ## 1. Preprocess
# The suite's pipeline: counts → normalize_total + log1p → 2000 HVGs → PCA. `X` now holds exactly the
# log-normalised expression sysVI expects (its likelihood is Gaussian on log data).

# %%
adata = prepare(raw, batch_key="sample")
print(adata)

# %% [markdown]
# ## 2. Set up: system = species, covariate = sample

# %%
SysVI.setup_anndata(adata, batch_key="species", categorical_covariate_keys=["sample"])

# %% [markdown]
# ## 3. Train a plain cVAE and sysVI (VampPrior + cycle) side by side
# `prior="standard_normal"` with cycle weight 0 is a plain cVAE. sysVI uses the defaults (5 VampPrior
# components, cycle weight 2; the paper's tutorial uses 5 on larger data).

# %%
scvi.settings.seed = 0
cvae = SysVI(adata, prior="standard_normal")
cvae.train(max_epochs=EPOCHS, plan_kwargs={"z_distance_cycle_weight": 0.0}, accelerator="cpu")
adata.obsm["X_cvae"] = cvae.get_latent_representation()

scvi.settings.seed = 0
model = SysVI(adata)
model.train(max_epochs=EPOCHS, accelerator="cpu")
adata.obsm["X_sysvi"] = model.get_latent_representation()

# %% [markdown]
# ## 4. Check the losses
# The cycle loss is logged as `cycle_loss_train`; inspect that all terms have stabilised.

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 3, figsize=(12, 3))
for ax, key in zip(axes, ["reconstruction_loss_train", "kl_local_train", "cycle_loss_train"], strict=True):
    ax.plot(model.history[key].to_numpy(dtype=float))
    ax.set_title(key)
    ax.set_xlabel("epoch")
fig.tight_layout()
fig.savefig(OUT / "sysvi_pancreas_losses.png", dpi=120)

# %% [markdown]
# ## 5. Integration: species mixing and cell-type separation
# `fast_scores` gives an iLISI-like species mixing (higher = more mixed) and kNN cell-type accuracy.

# %%
for key in ["X_pca", "X_cvae", "X_sysvi"]:
    s = fast_scores(adata.obsm[key], adata.obs["species"], adata.obs["cell_type"], silhouettes=False)
    print(key, {k: round(v, 3) for k, v in s.items()})

plot_umaps(
    adata, ["X_pca", "X_cvae", "X_sysvi"], ["species", "sample", "cell_type"], OUT / "sysvi_pancreas_umap.png"
)
print("figures in", OUT)

# %% [markdown]
# ## 6. Map a new sample as a query
# New samples of known systems can be mapped with scArches; a new system (e.g. rat) is refused.

# %%
ref_mask = adata.obs["sample"].isin(["human1", "human2", "human3", "mouse2"]).to_numpy()
ref = adata[ref_mask].copy()
SysVI.setup_anndata(ref, batch_key="species", categorical_covariate_keys=["sample"])
scvi.settings.seed = 0
ref_model = SysVI(ref)
ref_model.train(max_epochs=EPOCHS, accelerator="cpu")
query = adata[~ref_mask].copy()
SysVI.prepare_query_anndata(query, ref_model)
qmodel = SysVI.load_query_data(query, ref_model)
qmodel.train(max_epochs=max(EPOCHS // 4, 10), accelerator="cpu")
latent = np.r_[ref_model.get_latent_representation(), qmodel.get_latent_representation()]
print("query latent:", qmodel.get_latent_representation().shape, "finite:", bool(np.isfinite(latent).all()))
