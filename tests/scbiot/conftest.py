"""Small fixtures for the scBIOT tests (synthetic embeddings and prepared real data)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scvi_ext.datasets import simulate_embedding


def make_embedding_adata(
    n: int = 600, d: int = 10, n_batches: int = 3, n_types: int = 4, shift: float = 2.0, seed: int = 0
) -> ad.AnnData:
    X, b, ct = simulate_embedding(n, d, n_batches, n_types, batch_shift=shift, seed=seed)
    obs = pd.DataFrame(
        {"batch": [f"b{i}" for i in b], "cell_type": [f"t{i}" for i in ct]}, index=[f"c{i}" for i in range(n)]
    )
    a = ad.AnnData(np.zeros((n, 1), dtype=np.float32), obs=obs)
    a.obsm["X_pca"] = X
    return a


@pytest.fixture
def emb_adata() -> ad.AnnData:
    return make_embedding_adata()


@pytest.fixture
def make_emb():
    """Factory of synthetic embedding AnnDatas (``obsm['X_pca']``, ``obs['batch']``, ``obs['cell_type']``)."""
    return make_embedding_adata


@pytest.fixture(scope="session")
def pbmc_prepared(pbmc_counts):
    from scvi_ext.methods import prepare

    return prepare(pbmc_counts, batch_key="lane")
