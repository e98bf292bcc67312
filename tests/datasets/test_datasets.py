from __future__ import annotations

import numpy as np
import pytest

from scvi_ext.datasets import pbmc68k_reduced_counts, simulate_counts, simulate_embedding


def test_pbmc_counts_match_shared_copy(pbmc_counts):
    a = pbmc68k_reduced_counts()
    assert a.shape == (700, 765)
    assert a.obs["lane"].nunique() == 8
    assert a.obs["bulk_labels"].nunique() == 10
    vals = a.X.data
    assert np.all(vals == np.rint(vals)) and vals.min() >= 0
    # reconstruction is exact: identical to the copy in ../shared/data made independently
    assert abs(a.X - pbmc_counts.X).max() == 0
    np.testing.assert_array_equal(a.obs["lane"].astype(str), pbmc_counts.obs["lane"].astype(str))
    # and consistent with the bundled log-normalised values
    lib = np.asarray(a.obs["n_counts"])
    recon = np.log1p(a.X.toarray() / lib[:, None] * 1e4)
    np.testing.assert_allclose(recon, a.layers["lognorm_raw"].toarray(), atol=0.05)


def test_simulate_counts_structure():
    a = simulate_counts(n_cells=3000, n_genes=300, n_batches=3, n_cell_types=4, batch_effect=0.8, seed=3)
    assert a.shape == (3000, 300)
    assert set(a.obs["batch"].cat.categories) == {"batch0", "batch1", "batch2"}
    assert a.obs["cell_type"].nunique() == 4
    assert np.all(a.X.data == np.rint(a.X.data))
    b = simulate_counts(n_cells=3000, n_genes=300, n_batches=3, n_cell_types=4, batch_effect=0.8, seed=3)
    assert (a.X != b.X).nnz == 0, "same seed, same data"
    # cell types and batches both leave a visible signal in the mean expression
    X = np.log1p(a.X.toarray() / a.X.sum(1).A * 1e4)
    means_t = np.stack([X[(a.obs["cell_type"] == t).to_numpy()].mean(0) for t in a.obs["cell_type"].cat.categories])
    means_b = np.stack([X[(a.obs["batch"] == t).to_numpy()].mean(0) for t in a.obs["batch"].cat.categories])
    assert np.ptp(means_t, axis=0).max() > 1.0
    assert np.ptp(means_b, axis=0).max() > 0.5


def test_simulate_counts_no_batch_effect_is_weaker():
    kw = dict(n_cells=2000, n_genes=200, n_batches=2, n_cell_types=1, seed=0)
    strong = simulate_counts(batch_effect=1.0, **kw)
    none = simulate_counts(batch_effect=0.0, **kw)

    def gap(a):
        X = np.log1p(a.X.toarray() / a.X.sum(1).A * 1e4)
        b = (a.obs["batch"] == "batch0").to_numpy()
        return np.abs(X[b].mean(0) - X[~b].mean(0)).mean()

    assert gap(strong) > 3 * gap(none)


def test_simulate_embedding():
    X, batch, ct = simulate_embedding(n_cells=500, n_dims=8, n_batches=3, n_cell_types=4, batch_shift=3.0, seed=0)
    assert X.shape == (500, 8) and X.dtype == np.float32
    assert set(np.unique(batch)) == {0, 1, 2} and set(np.unique(ct)) <= {0, 1, 2, 3}


def test_simulate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_batches must be positive"):
        simulate_counts(n_cells=10, n_genes=5, n_batches=0)
