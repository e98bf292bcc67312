"""The exact BLAS + partition kNN that integrate_ot uses for small searches (``scbiot._knn_exact``)."""

from __future__ import annotations

import numpy as np
import pytest

from scvi_ext.neighbors import knn
from scvi_ext.scbiot import _knn_exact, _ot_refine
from scvi_ext.scbiot._knn_exact import EXACT_KNN_MAX_DATA, exact_knn


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
    monkeypatch.setattr(_knn_exact, "_CHUNK_ENTRIES", 300)  # one query row per chunk
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
    real = _ot_refine.exact_knn
    monkeypatch.setattr(_ot_refine, "exact_knn", lambda *a: calls.append(a[0].shape[0]) or real(*a))
    rng = np.random.default_rng(0)
    small = rng.standard_normal((200, 4)).astype(np.float32)
    _ot_refine._knn(small, 5, "auto", False)
    _ot_refine._knn(small, 5, "sklearn", False)  # an explicit backend is honoured
    big = rng.standard_normal((EXACT_KNN_MAX_DATA + 1, 2)).astype(np.float32)
    _ot_refine._knn(big, 3, "auto", False)
    assert calls == [200]  # only the small "auto" search takes the exact path
    tiny = rng.standard_normal((20, 4)).astype(np.float32)
    _ot_refine._knn(tiny, 3, "auto", False)  # below EXACT_KNN_MIN_DATA faiss' heap is faster
    assert calls == [200]
