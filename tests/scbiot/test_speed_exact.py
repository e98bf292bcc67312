"""The part-A speed changes are exact: same k-means centres as scikit-learn, same kNN graph, same entropies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import MiniBatchKMeans

from scvi_ext.neighbors import knn
from scvi_ext.scbiot import _ot_refine as R
from scvi_ext.scbiot._kmeans import minibatch_kmeans

CASES = [
    # (n, d, k, weighted): tiny, k close to n, batch < n (sampled init), init subset (n > 3 * batch), d = 2
    (9, 5, 8, True),
    (40, 30, 8, False),
    (60, 30, 15, True),
    (116, 30, 21, True),
    (300, 10, 37, False),
    (1000, 30, 8, True),
    (1500, 30, 64, True),
    (500, 2, 28, False),
]


@pytest.mark.parametrize(("n", "d", "k", "weighted"), CASES)
@pytest.mark.parametrize("seed", [0, 7])
def test_minibatch_kmeans_bit_identical_to_sklearn(n, d, k, weighted, seed):
    rng = np.random.default_rng(n + d + k + seed)
    X = (rng.normal(size=(n, d)) + rng.integers(0, 6, size=(n, 1))).astype(np.float32)
    w = (rng.gamma(2.0, size=n) + 1e-3).astype(np.float32) if weighted else None
    ref = (
        MiniBatchKMeans(
            n_clusters=k, random_state=seed, batch_size=min(4096, max(4 * k, 256)), max_iter=25, n_init=1
        )
        .fit(X, sample_weight=w)
        .cluster_centers_
    )
    out = minibatch_kmeans(X, k, seed, w)
    assert out.dtype == np.float32 and out.shape == (k, d)
    np.testing.assert_array_equal(out, ref)


def test_minibatch_kmeans_duplicates_and_bad_k():
    X = np.repeat(np.arange(6, dtype=np.float32)[:, None], 10, axis=0)  # 6 distinct points, 10 copies each
    ref = MiniBatchKMeans(n_clusters=6, random_state=3, batch_size=256, max_iter=25, n_init=1).fit(X)
    np.testing.assert_array_equal(minibatch_kmeans(X, 6, 3), ref.cluster_centers_)
    with pytest.raises(ValueError, match="n_clusters"):
        minibatch_kmeans(X, 61, 0)


def test_batch_entropy_matches_add_at_counting():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=200)
    idx = rng.integers(0, 200, size=(200, 15))
    counts = np.zeros((200, 4), dtype=np.float32)
    np.add.at(counts, (np.repeat(np.arange(200), 15), codes[idx].ravel()), 1.0)
    p = counts / (counts.sum(1, keepdims=True) + 1e-12)
    np.testing.assert_array_equal(R._batch_entropy(idx, codes, 4), -(p * np.log(p + 1e-12)).sum(1))


def test_k0_graph_is_prefix_of_k_eval_search():
    X = np.random.default_rng(1).normal(size=(400, 30)).astype(np.float32)
    i30, d30 = knn(X, k=30)
    i20, d20 = knn(X, k=20)
    np.testing.assert_array_equal(i30[:, :20], i20)
    np.testing.assert_array_equal(d30[:, :20], d20)


def test_row_gather_equals_advanced_indexing():
    X = torch.randn(50, 7)
    idx = torch.randint(0, 50, (50, 5))
    assert torch.equal(R._rows(X, idx), X[idx])


def test_integrate_ot_reuses_sharpen_field_only_for_unchanged_x(emb_adata, monkeypatch):
    calls = []
    orig = R._sharpen_field

    def spy(X, *a, **k):
        calls.append(X)
        return orig(X, *a, **k)

    monkeypatch.setattr(R, "_sharpen_field", spy)
    m = R.integrate_ot(emb_adata, "X_pca", "batch", max_iter=8, patience=8, tol=10.0, prealign="none")
    # tol=10: only iteration 1 is accepted, so X changes once -> two distinct inputs, two fits
    assert m["it"] == 1 and m["n_iter_run"] == 8
    assert len(calls) == 2


def test_lloyd_row_norms_patch_is_scoped_and_equal():
    from sklearn.cluster import _k_means_lloyd
    from sklearn.utils.extmath import row_norms

    from scvi_ext.scbiot import _kmeans as K

    C = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_array_equal(K._dense_row_norms(C, squared=True), row_norms(C, squared=True))
    np.testing.assert_array_equal(K._dense_row_norms(C), row_norms(C))
    with K._lean_lloyd_row_norms(), K._lean_lloyd_row_norms():
        assert _k_means_lloyd.row_norms is K._dense_row_norms
    assert _k_means_lloyd.row_norms is row_norms
    minibatch_kmeans(C, 3, 0)
    assert _k_means_lloyd.row_norms is row_norms


@pytest.mark.parametrize(
    ("n", "d", "k", "scale"),
    [(225, 30, 30, 1.0), (499, 30, 28, 1e-6), (3000, 200, 12, 1.0), (400, 2, 40, 1e6), (60, 1, 9, 1.0)],
)
def test_kmeanspp_seeding_bit_identical_to_sklearn(n, d, k, scale):
    # the buffered seeding (single-block case) and its chunked fallback (n = 3000, d = 200) give
    # scikit-learn's k-means++ centres exactly, for weighted points of very different scales
    from sklearn.cluster import kmeans_plusplus

    from scvi_ext.scbiot._kmeans import _kmeanspp

    rng = np.random.default_rng(n + k)
    X = ((rng.normal(size=(n, d)) + rng.integers(0, 6, size=(n, 1))) * scale).astype(np.float32)
    X[: n // 4] = X[0]  # duplicates: zero distances, ties in the candidate potentials
    w = (rng.gamma(2.0, size=n) + 1e-3).astype(np.float32)
    ref, _ = kmeans_plusplus(X, k, sample_weight=w, random_state=np.random.RandomState(5))
    out = _kmeanspp(X, k, w, np.random.RandomState(5))
    np.testing.assert_array_equal(out, ref)
