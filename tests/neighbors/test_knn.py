"""kNN entry point: every backend against a brute-force numpy search, conventions, graph helper, errors."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from scvi_ext.neighbors import (
    AUTO_PYNNDESCENT_MIN_OBS,
    BACKENDS,
    GRAPH_MODES,
    METRICS,
    available_backends,
    knn,
    knn_graph,
)
from scvi_ext.neighbors import _knn as knn_module

EXACT_BACKENDS = [b for b in (BACKENDS.FAISS, BACKENDS.SKLEARN) if b in available_backends()]


def pairwise(data, query, metric):
    """Full float64 ``(n_query, n_data)`` distance matrix."""
    data = np.asarray(data, dtype=np.float64)
    q = data if query is None else np.asarray(query, dtype=np.float64)
    if metric == "cosine":
        un = data / np.linalg.norm(data, axis=1, keepdims=True)
        uq = q / np.linalg.norm(q, axis=1, keepdims=True)
        return 1.0 - uq @ un.T
    return np.sqrt(((q[:, None, :] - data[None, :, :]) ** 2).sum(-1))


def brute_knn(data, query, k, metric, exclude_self):
    """Obviously-correct reference: full distance matrix, stable argsort."""
    dist = pairwise(data, query, metric)
    if query is None and exclude_self:
        np.fill_diagonal(dist, np.inf)
    idx = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(dist, idx, axis=1)


@pytest.fixture
def data():
    return np.random.default_rng(1).normal(size=(120, 6))


@pytest.fixture
def query():
    return np.random.default_rng(2).normal(size=(30, 6))


def test_available_backends_lists_installed():
    found = available_backends()
    assert "sklearn" in found
    assert set(found) <= {BACKENDS.FAISS, BACKENDS.PYNNDESCENT, BACKENDS.SKLEARN}
    # this environment installs all three (pyproject dependencies)
    assert found == [BACKENDS.FAISS, BACKENDS.PYNNDESCENT, BACKENDS.SKLEARN]


@pytest.mark.parametrize("backend", [*EXACT_BACKENDS, BACKENDS.AUTO])
@pytest.mark.parametrize("metric", list(METRICS))
@pytest.mark.parametrize("use_query", [False, True])
def test_exact_backends_match_brute_force(data, query, backend, metric, use_query):
    q = query if use_query else None
    idx, dist = knn(data, q, k=7, metric=metric, backend=backend)
    ref_idx, ref_dist = brute_knn(data, q, 7, metric, exclude_self=True)
    n_query = (query if use_query else data).shape[0]
    assert idx.shape == dist.shape == (n_query, 7)
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(dist, axis=1) >= 0)


@pytest.mark.parametrize("backend", EXACT_BACKENDS)
def test_euclidean_distances_are_not_squared(backend):
    X = np.array([[0.0, 0.0], [3.0, 4.0], [30.0, 40.0]])
    idx, dist = knn(X, k=1, backend=backend)
    np.testing.assert_array_equal(idx.ravel(), [1, 0, 1])
    np.testing.assert_allclose(dist.ravel(), [5.0, 5.0, 45.0], rtol=1e-6)


@pytest.mark.parametrize("backend", EXACT_BACKENDS)
def test_exclude_self_false_puts_self_first(data, backend):
    idx, dist = knn(data, k=5, exclude_self=False, backend=backend)
    np.testing.assert_array_equal(idx[:, 0], np.arange(data.shape[0]))
    np.testing.assert_array_equal(dist[:, 0], 0.0)
    ref_idx, _ = brute_knn(data, None, 4, "euclidean", exclude_self=True)
    np.testing.assert_array_equal(idx[:, 1:], ref_idx)


@pytest.mark.parametrize("backend", EXACT_BACKENDS)
def test_duplicates_never_return_self(backend):
    base = np.random.default_rng(3).normal(size=(10, 3))
    X = np.r_[base, base, base]  # every point has two exact copies
    idx, dist = knn(X, k=2, backend=backend)
    n = X.shape[0]
    assert not np.any(idx == np.arange(n)[:, None])
    # the two nearest are the copies, at distance 0
    np.testing.assert_allclose(dist, 0.0, atol=1e-3)
    np.testing.assert_array_equal(np.sort(idx % 10, axis=1), np.c_[np.arange(n) % 10, np.arange(n) % 10])
    idx_self, dist_self = knn(X, k=3, exclude_self=False, backend=backend)
    np.testing.assert_array_equal(idx_self[:, 0], np.arange(n))
    assert all(len(set(row)) == 3 for row in idx_self.tolist())


def test_query_includes_identical_points(data):
    """With an explicit query, a query point equal to a data point finds it (no self-exclusion)."""
    idx, dist = knn(data, data[:5], k=1)
    np.testing.assert_array_equal(idx.ravel(), np.arange(5))
    np.testing.assert_allclose(dist, 0.0, atol=1e-3)


def test_k_equal_to_available_points(data):
    idx, _ = knn(data, k=data.shape[0] - 1)
    assert all(set(row) == set(range(data.shape[0])) - {i} for i, row in enumerate(idx.tolist()))
    idx_q, _ = knn(data, data[:3] + 0.5, k=data.shape[0])
    assert all(sorted(row) == list(range(data.shape[0])) for row in idx_q.tolist())


def test_torch_and_integer_input(data):
    torch = pytest.importorskip("torch")
    ref = knn(data, k=4)
    out = knn(torch.from_numpy(data), k=4)
    np.testing.assert_array_equal(out[0], ref[0])
    np.testing.assert_allclose(out[1], ref[1], rtol=1e-6)
    ints = np.arange(20).reshape(10, 2) ** 2
    idx, dist = knn(ints, k=1, backend="sklearn")
    assert idx.dtype == np.int64 and dist.dtype == np.float32


def test_use_gpu_falls_back_or_matches(data):
    import faiss

    gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idx, dist = knn(data, k=5, backend="faiss", use_gpu=True)
    assert any(issubclass(w.category, RuntimeWarning) for w in caught) != gpu
    ref_idx, ref_dist = knn(data, k=5, backend="faiss")
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-5)


def test_auto_resolution(monkeypatch):
    assert knn_module._resolve_backend("auto", 10) == (
        "faiss" if "faiss" in available_backends() else "sklearn"
    )
    monkeypatch.setattr(knn_module, "available_backends", lambda: ["pynndescent", "sklearn"])
    assert knn_module._resolve_backend("auto", AUTO_PYNNDESCENT_MIN_OBS - 1) == "sklearn"
    assert knn_module._resolve_backend("auto", AUTO_PYNNDESCENT_MIN_OBS) == "pynndescent"
    monkeypatch.setattr(knn_module, "available_backends", lambda: ["sklearn"])
    assert knn_module._resolve_backend("auto", 10**7) == "sklearn"
    with pytest.raises(ImportError, match="faiss-cpu"):
        knn(np.ones((5, 2)) * np.arange(5)[:, None], k=2, backend="faiss")


# ---------------------------------------------------------------------------------------------------------
# pynndescent: approximate; its numba JIT compilation costs ~30 s per process, so one search per metric
# ---------------------------------------------------------------------------------------------------------
def _recall(idx, ref_idx):
    return np.mean(
        [len(set(a) & set(b)) / len(b) for a, b in zip(idx.tolist(), ref_idx.tolist(), strict=True)]
    )


# Reduced form: Euclidean only; SCVI_EXT_FULL=1 adds cosine (another ~15 s of numba compilation).
PYNNDESCENT_METRICS = list(METRICS) if os.environ.get("SCVI_EXT_FULL") == "1" else [METRICS.EUCLIDEAN]


@pytest.mark.slow
@pytest.mark.parametrize("metric", PYNNDESCENT_METRICS)
def test_pynndescent_close_to_brute_force(metric):
    rng = np.random.default_rng(4)
    data = rng.normal(size=(400, 8))
    query = rng.normal(size=(40, 8))
    k = 10
    idx, dist = knn(data, k=k, metric=metric, backend="pynndescent")
    ref_idx, ref_dist = brute_knn(data, None, k, metric, exclude_self=True)
    assert idx.shape == (400, k) and idx.dtype == np.int64 and dist.dtype == np.float32
    assert not np.any(idx == np.arange(400)[:, None])
    assert np.all(np.diff(dist, axis=1) >= 0)
    assert _recall(idx, ref_idx) >= 0.95
    # reported distances are the true distances of the returned points
    true_d = np.take_along_axis(pairwise(data, None, metric), idx, axis=1)
    np.testing.assert_allclose(dist, true_d, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dist.mean(), ref_dist.mean(), rtol=0.02)
    if metric == METRICS.EUCLIDEAN:  # the query path (cosine's would add ~15 s of compilation)
        q_idx, q_dist = knn(data, query, k=k, metric=metric, backend="pynndescent")
        ref_q_idx, ref_q_dist = brute_knn(data, query, k, metric, exclude_self=True)
        assert q_idx.shape == (40, k)
        assert _recall(q_idx, ref_q_idx) >= 0.95
        np.testing.assert_allclose(q_dist.mean(), ref_q_dist.mean(), rtol=0.02)


# ---------------------------------------------------------------------------------------------------------
# knn_graph
# ---------------------------------------------------------------------------------------------------------
def test_knn_graph_matches_dense_construction(data):
    idx, dist = knn(data, k=4)
    n = data.shape[0]
    dense_c, dense_d = np.zeros((n, n)), np.zeros((n, n))
    for i in range(n):
        for j, d in zip(idx[i], dist[i], strict=True):
            dense_c[i, j], dense_d[i, j] = 1.0, d
    conn = knn_graph(idx, dist, n)
    assert sp.isspmatrix_csr(conn) and conn.shape == (n, n) and conn.nnz == n * 4
    np.testing.assert_array_equal(conn.toarray(), dense_c)
    np.testing.assert_allclose(
        knn_graph(idx, dist, n, mode=GRAPH_MODES.DISTANCE).toarray(), dense_d, rtol=1e-6
    )
    sym = knn_graph(idx, dist, n, symmetrize=True).toarray()
    np.testing.assert_array_equal(sym, np.maximum(dense_c, dense_c.T))


def test_knn_graph_rectangular(data, query):
    idx, dist = knn(data, query, k=3)
    g = knn_graph(idx, dist, data.shape[0])
    assert g.shape == (query.shape[0], data.shape[0])
    np.testing.assert_array_equal(np.asarray(g.sum(axis=1)).ravel(), 3)


def test_knn_graph_errors(data, query):
    idx, dist = knn(data, query, k=3)
    with pytest.raises(ValueError, match="mode"):
        knn_graph(idx, dist, data.shape[0], mode="weights")
    with pytest.raises(ValueError, match="symmetrize"):
        knn_graph(idx, dist, data.shape[0], symmetrize=True)
    with pytest.raises(ValueError, match="n_obs"):
        knn_graph(idx, dist, 5)
    with pytest.raises(ValueError, match="same shape"):
        knn_graph(idx, dist[:, :2], data.shape[0])


# ---------------------------------------------------------------------------------------------------------
# errors (raised before any search)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 10}, "k=10 is too large"),  # 10 points, self excluded -> at most 9
        ({"k": 0}, "positive integer"),
        ({"k": 2.0}, "positive integer"),
        ({"metric": "manhattan"}, "metric='manhattan'"),
        ({"backend": "annoy"}, "backend='annoy'"),
    ],
)
def test_bad_arguments(kwargs, match):
    X = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match=match):
        knn(X, **kwargs)


def test_bad_inputs():
    X = np.random.default_rng(0).normal(size=(10, 3))
    assert knn(X, k=10, exclude_self=False)[0].shape == (10, 10)
    with pytest.raises(ValueError, match="k=11 is too large"):
        knn(X, X[:2], k=11)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="`data` contains 1 NaN"):
        knn(bad, k=2)
    with pytest.raises(ValueError, match="`query` contains 1 NaN"):
        knn(X, bad, k=2)
    with pytest.raises(ValueError, match="features"):
        knn(X, X[:, :2], k=2)
    with pytest.raises(ValueError, match="2-D"):
        knn(X[:, 0], k=2)
    with pytest.raises(ValueError, match="sparse"):
        knn(sp.csr_matrix(X), k=2)
    zero = X.copy()
    zero[0] = 0.0
    with pytest.raises(ValueError, match="all-zero rows"):
        knn(zero, k=2, metric="cosine")
    assert knn(zero, k=2)[0].shape == (10, 2)  # fine for the Euclidean metric


@pytest.mark.skipif("faiss" not in available_backends(), reason="faiss not installed")
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_faiss_rows_sorted_without_resorting(metric, exclude_self):
    """faiss rows come back ascending (knn skips its re-sort for faiss): same as a sorted sklearn search."""
    X = np.random.default_rng(5).normal(size=(300, 12)).astype(np.float32)
    idx, dist = knn(X, k=25, backend="faiss", metric=metric, exclude_self=exclude_self)
    assert np.all(np.diff(dist, axis=1) >= 0)
    idx_s, dist_s = knn(X, k=25, backend="sklearn", metric=metric, exclude_self=exclude_self)
    np.testing.assert_array_equal(idx, idx_s)
    np.testing.assert_allclose(dist, dist_s, atol=1e-5)
