"""Fixtures for the scCRAFT tests: prepared real data with pseudo-labels, clustered once per session."""

from __future__ import annotations

import pytest

SMALL = {
    "n_latent": 16,
    "n_hidden_encoder": (64, 32),
    "n_hidden_decoder": (32, 64),
    "n_hidden_discriminator": 32,
}


@pytest.fixture(scope="session")
def pancreas_sccraft(pancreas_counts):
    """Pancreas (350 cells, 6 samples) prepared (300 HVGs: the p x p decoder heads stay cheap) with leiden1/leiden2 pseudo-labels."""
    from scvi_ext.methods import prepare
    from scvi_ext.sccraft import cluster_pseudo_labels

    adata = prepare(pancreas_counts, "sample", n_hvg=300)
    cluster_pseudo_labels(adata, flavor="igraph")
    return adata


@pytest.fixture(scope="session")
def pbmc_sccraft(pbmc_counts):
    """PBMC (700 cells, 8 lanes) prepared (300 HVGs) with leiden1/leiden2 pseudo-labels."""
    from scvi_ext.methods import prepare
    from scvi_ext.sccraft import cluster_pseudo_labels

    adata = prepare(pbmc_counts, "lane", n_hvg=300)
    cluster_pseudo_labels(adata, flavor="igraph")
    return adata


@pytest.fixture
def small_kwargs():
    """A tiny architecture for fast CPU tests."""
    return dict(SMALL)
