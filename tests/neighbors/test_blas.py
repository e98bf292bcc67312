"""The exact BLAS + partition kNN (``backend="blas"``) that integrate_ot uses for small searches."""

from __future__ import annotations

import numpy as np
import pytest

from scvi_ext.neighbors import _blas, knn
from scvi_ext.neighbors._blas import blas_knn as exact_knn
from scvi_ext.neighbors._blas import blas_knn_distances
from scvi_ext.scbiot import _ot_refine
from scvi_ext.scbiot._constants import BLAS_KNN_MAX_DATA


def _brute(data, query, k):
    d = np.sqrt(((query[:, None, :].astype(np.float64) - data[None, :, :]) ** 2).sum(-1))
    return d


@pytest.mark.parametrize("n,k", [(5, 1), (40, 15), (300, 30), (300, 299)])
def test_self_search_matches_brute_force(n, k):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 12)).astype(np.float32)
    idx, dist = exact_knn(X, None, k)
    assert idx.shape == dist.shape == (n, k) and idx.dtype == np.int64 and dist.dtype == np.float32
    assert not np.any(idx == np.arange(n)[:, None])  # never its own neighbour
    D = _brute(X, X, k)
    np.fill_diagonal(D, np.inf)
    ref = np.sort(D, axis=1)[:, :k]
    np.testing.assert_allclose(dist, ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(D, idx, axis=1), ref, rtol=1e-5, atol=1e-4)
    assert np.all(np.diff(dist, axis=1) >= 0)


def test_query_search_and_chunks_agree_with_faiss_or_sklearn(monkeypatch):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((257, 30)).astype(np.float32)
    query = rng.standard_normal((101, 30)).astype(np.float32)
    full = exact_knn(data, query, 7)
    monkeypatch.setattr(_blas, "_CHUNK_ENTRIES", 300)  # one query row per chunk
    chunked = exact_knn(data, query, 7)
    np.testing.assert_array_equal(full[0], chunked[0])
    np.testing.assert_allclose(full[1], chunked[1], rtol=1e-5)  # BLAS blocking may round differently
    ref_idx, ref_d = knn(data, query, k=7)
    assert (full[0] == ref_idx).mean() > 0.99  # same lists up to float32 near-ties
    np.testing.assert_allclose(full[1], ref_d, rtol=1e-4, atol=1e-4)


def test_ties_keep_lower_index_and_k_equals_n():
    X = np.array([[0.0], [1.0], [-1.0], [2.0], [-2.0]], dtype=np.float32)
    idx, dist = exact_knn(X, None, 2)
    assert idx[0].tolist() == [1, 2] and dist[0].tolist() == [1.0, 1.0]
    idx, dist = exact_knn(X, X[:1], 5)  # k == n_data: every point, sorted
    assert idx[0].tolist() == [0, 1, 2, 3, 4] and dist[0].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0]
    dup = np.zeros((4, 3), dtype=np.float32)  # all distances tie
    idx, _ = exact_knn(dup, None, 2)
    assert idx.tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]]


def test_bad_input():
    X = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="k=4"):
        exact_knn(X, None, 4)
    with pytest.raises(ValueError, match="same columns"):
        exact_knn(X, np.zeros((2, 3), dtype=np.float32), 1)


def test_integrate_ot_routing(monkeypatch):
    calls = []
    real = _ot_refine.knn
    monkeypatch.setattr(
        _ot_refine, "knn", lambda *a, **kw: calls.append((a[0].shape[0], kw["backend"])) or real(*a, **kw)
    )
    rng = np.random.default_rng(0)
    small = rng.standard_normal((200, 4)).astype(np.float32)
    _ot_refine._knn(small, 5, "auto", False)
    _ot_refine._knn(small, 5, "sklearn", False)  # an explicit backend is honoured
    big = rng.standard_normal((BLAS_KNN_MAX_DATA + 1, 2)).astype(np.float32)
    _ot_refine._knn(big, 3, "auto", False)
    tiny = rng.standard_normal((20, 4)).astype(np.float32)
    _ot_refine._knn(tiny, 3, "auto", False)  # below BLAS_KNN_MIN_DATA faiss' heap is faster
    # only the small "auto" search takes the blas path
    assert calls == [(200, "blas"), (200, "sklearn"), (BLAS_KNN_MAX_DATA + 1, "auto"), (20, "auto")]


@pytest.mark.parametrize("n,k", [(40, 15), (300, 15), (300, 299)])
def test_distances_only_is_bit_identical(n, k, monkeypatch):
    rng = np.random.default_rng(n + k)
    X = rng.standard_normal((n, 30)).astype(np.float32)
    X[7] = X[3]  # a duplicate: a zero distance and tied rows
    np.testing.assert_array_equal(blas_knn_distances(X, None, k), exact_knn(X, None, k)[1])
    Q = rng.standard_normal((17, 30)).astype(np.float32)
    np.testing.assert_array_equal(blas_knn_distances(X, Q, k), exact_knn(X, Q, k)[1])
    monkeypatch.setattr(_blas, "_CHUNK_ENTRIES", 2 * n)  # two query rows per chunk
    np.testing.assert_array_equal(blas_knn_distances(X, None, k), exact_knn(X, None, k)[1])


def test_knn_blas_backend_matches_exact_backends():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((150, 8))
    ref_idx, ref_d = knn(X, k=10, backend="sklearn")
    idx, d = knn(X, k=10, backend="blas")
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(d, ref_d, rtol=1e-4, atol=1e-4)
    idx_self, d_self = knn(X, k=10, backend="blas", exclude_self=False)
    assert idx_self[:, 0].tolist() == list(range(150)) and np.all(d_self[:, 0] == 0)
    np.testing.assert_array_equal(idx_self[:, 1:], idx[:, :9])
    one, _ = knn(X, k=1, backend="blas", exclude_self=False)
    assert one.ravel().tolist() == list(range(150))
    q_idx, _ = knn(X, X[:5] + 1e-3, k=3, backend="blas")
    assert q_idx[:, 0].tolist() == list(range(5))
    with pytest.raises(ValueError, match="euclidean"):
        knn(X, k=3, backend="blas", metric="cosine")
    with pytest.raises(ValueError, match="non-finite|NaN|finite"):
        knn(np.full((5, 2), np.nan), k=2, backend="blas")


def test_unsorted_rows_hold_the_same_sets():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 10)).astype(np.float32)
    X[11] = X[4]  # a duplicate (a zero distance, tied rows)
    idx, d = knn(X, k=20, backend="blas")
    idx_u, d_u = knn(X, k=20, backend="blas", sort=False)
    np.testing.assert_array_equal(np.sort(idx_u, axis=1), np.sort(idx, axis=1))
    np.testing.assert_array_equal(np.sort(d_u, axis=1), d)
    D = np.sqrt(((X[:, None].astype(np.float64) - X[None]) ** 2).sum(-1))
    np.testing.assert_allclose(np.take_along_axis(D, idx_u, axis=1), d_u, rtol=1e-4, atol=1e-4)
