# %% [markdown]
# # PIANO on human + mouse pancreas: two covariates, counterfactuals and query mapping
#
# PIANO (Wang et al. 2025, bioRxiv 2025.11.16.686778) is a VAE whose encoder never sees covariates and whose
# decoder ends in a negative-binomial GLM over *all* covariates (here: the sequencing `sample` and the
# `species`). This tutorial trains it on the small Baron pancreas subset shipped in `../shared/data`
# (350 cells, 6 samples, 2 species), looks at the embedding, computes species-marginal counterfactual
# expression, and maps a held-out sample as a query.
#
# Run with `python tutorials/piano_pancreas.py` (about a minute on one CPU core); figures go to
# `out/tutorials/`.

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

from scvi_ext.methods import prepare
from scvi_ext.metrics import fast_scores
from scvi_ext.piano import PIANO

torch.set_num_threads(1)
scvi.settings.seed = 0
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "tutorials"
OUT.mkdir(parents=True, exist_ok=True)
raw = ad.read_h5ad(ROOT.parent / "shared" / "data" / "cider_pancreas_baron" / "cider_pancreas_baron.h5ad")
adata = prepare(raw, batch_key="sample")  # counts in layers["counts"], 2000 HVGs, PCA
print(adata)

# %% [markdown]
# ## Hold out one sample as a query, train on the rest
# `sample` and `species` are two categorical covariates: each gets its own one-hot block in the decoder's
# first layer and in the GLM of the NB mean and log-odds.

# %%
query_sample = adata.obs["sample"].cat.categories[-1]
is_query = (adata.obs["sample"] == query_sample).to_numpy()
ref = adata[~is_query].copy()
query = adata[is_query].copy()
PIANO.setup_anndata(ref, layer="counts", batch_key="sample", categorical_covariate_keys=["species"])
model = PIANO(ref)
print(model)
model.train(max_epochs=150, progress_bar=False)
print(model.history["elbo_train"].tail(3))

# %% [markdown]
# ## Embedding: mixing of samples and species, separation of cell types

# %%
ref.obsm["X_piano"] = model.get_latent_representation()
sc.pp.neighbors(ref, use_rep="X_piano")
sc.tl.umap(ref, random_state=0)
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, key in zip(axes, ["cell_type", "species", "sample"], strict=True):
    sc.pl.umap(ref, color=key, ax=ax, show=False, title=f"PIANO latent: {key}")
fig.tight_layout()
fig.savefig(OUT / "piano_pancreas_umap.png", dpi=120)
for rep in ["X_pca", "X_piano"]:
    print(rep, fast_scores(ref.obsm[rep], ref.obs["sample"], ref.obs["cell_type"]))

# %% [markdown]
# ## Counterfactual expression
# `covariates="marginal"` sets every categorical block to `1/n_k` (all samples and both species averaged);
# a dict replaces only the named keys, e.g. every cell "as if mouse".

# %%
cf_marginal = model.get_counterfactual_expression(covariates="marginal", give_mean_z=True)
cf_mouse = model.get_counterfactual_expression(covariates={"species": "mouse"}, give_mean_z=True)
recon = model.get_counterfactual_expression(covariates=None, give_mean_z=True)
gene = recon.var().sort_values().index[-1]  # the gene whose reconstructed mean varies most
fig, ax = plt.subplots(figsize=(5, 4))
for name, df in [("reconstruction", recon), ("marginal", cf_marginal), ("as mouse", cf_mouse)]:
    ax.hist(np.log1p(df[gene]), bins=30, alpha=0.5, label=name)
ax.set_xlabel(f"log1p expected counts of {gene}")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "piano_pancreas_counterfactual.png", dpi=120)

# %% [markdown]
# ## Query mapping
# The encoder is covariate-free, so the held-out sample is embedded without any training. `load_query_data`
# adds the new sample as a category (new columns only) when generative outputs are wanted for it; reference
# latents stay bit-identical.

# %%
PIANO.prepare_query_anndata(query, model)
z_query = model.get_latent_representation(query)  # no training needed
q_model = PIANO.load_query_data(query, model)
q_model.train(max_epochs=20, progress_bar=False)
assert np.array_equal(q_model.get_latent_representation(ref), ref.obsm["X_piano"])
both = ad.concat([ref, query], label="set", keys=["reference", "query"])
both.obsm["X_piano"] = np.vstack([ref.obsm["X_piano"], z_query])
sc.pp.neighbors(both, use_rep="X_piano")
sc.tl.umap(both, random_state=0)
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, key in zip(axes, ["set", "cell_type"], strict=True):
    sc.pl.umap(both, color=key, ax=ax, show=False, title=f"reference + query ({query_sample}): {key}")
fig.tight_layout()
fig.savefig(OUT / "piano_pancreas_query.png", dpi=120)
print("figures written to", OUT)
