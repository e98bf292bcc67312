"""PIANO through scvi's RNASeqMixin: DE, posterior predictive samples, likelihood parameters, transform_batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scvi_ext.datasets import simulate_counts
from scvi_ext.piano import PIANO


@pytest.fixture(scope="module")
def model() -> PIANO:
    torch.manual_seed(0)
    adata = simulate_counts(300, 40, n_batches=2, seed=0)
    PIANO.setup_anndata(adata, batch_key="batch")
    m = PIANO(adata, n_hidden=32, n_latent=4, n_layers=1)
    m.train(max_epochs=5, accelerator="cpu", progress_bar=False)
    return m


def test_is_rnaseq_mixin(model: PIANO) -> None:
    from scvi.model.base import RNASeqMixin

    assert isinstance(model, RNASeqMixin)


def test_transform_batch_equals_covariate_dict(model: PIANO) -> None:
    batches = list(model.adata.obs["batch"].cat.categories)
    a = model.get_normalized_expression(transform_batch=batches[1], return_numpy=True)
    b = model.get_normalized_expression(covariates={"batch": batches[1]}, return_numpy=True)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    own = model.get_normalized_expression(return_numpy=True)
    assert not np.allclose(a, own)  # cells of the other batch changed
    np.testing.assert_allclose(a.sum(1), 1.0, rtol=1e-4)


def test_gene_list_and_samples(model: PIANO) -> None:
    genes = list(model.adata.var_names[:5])
    df = model.get_normalized_expression(gene_list=genes, library_size=1e4)
    assert list(df.columns) == genes and df.shape == (model.adata.n_obs, 5)
    draws = model.get_normalized_expression(n_samples=3, return_mean=False)
    assert draws.shape == (3, model.adata.n_obs, model.adata.n_vars)
    assert not np.allclose(draws[0], draws[1])  # z sampled
    with pytest.raises(ValueError, match="gene_list"):
        model.get_normalized_expression(gene_list=["not-a-gene"])
    with pytest.raises(NotImplementedError, match="uniform"):
        model.get_normalized_expression(weights="importance")


def test_differential_expression_runs(model: PIANO) -> None:
    de = model.differential_expression(groupby="cell_type", silent=True)
    # vanilla mode: Bayes factors of h1 > h2 from the decoded proportions of the two groups
    assert {"proba_m1", "proba_m2", "bayes_factor", "scale1", "scale2"} <= set(de.columns)
    assert np.isfinite(de["bayes_factor"]).all()
    assert set(de["comparison"].str.split(" vs ").str[0]) == set(model.adata.obs["cell_type"].astype(str))


def test_posterior_predictive_and_likelihood(model: PIANO) -> None:
    pp = model.posterior_predictive_sample(n_samples=2)
    assert pp.shape == (model.adata.n_obs, model.adata.n_vars, 2)
    vals = pp.todense()
    assert (vals >= 0).all() and np.allclose(vals, np.round(vals))
    params = model.get_likelihood_parameters()
    mu = model.get_normalized_expression(library_size="latent", return_numpy=True, n_samples=1)
    assert params["mean"].shape == mu.shape and params["dispersions"].shape == mu.shape
    assert (params["dispersions"] > 0).all()
    lib = model.get_latent_library_size()
    np.testing.assert_allclose(lib.ravel(), np.asarray(model.adata.X.sum(1)).ravel())
