"""One k-nearest-neighbour entry point for the whole suite: faiss (CPU/GPU) -> pynndescent -> scikit-learn,
plus an exact numpy/BLAS search (``backend="blas"``) for callers that search among a few hundred points.

Every backend returns the same thing: ``(indices, distances)`` of shape ``(n_query, k)``, ``int64`` and
``float32``, sorted by ascending distance, with *true* metric distances (Euclidean distances are **not**
squared; cosine distance is ``1 - cos``). faiss and pynndescent are imported lazily, only when used.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from ._blas import blas_knn


class _Backends(NamedTuple):
    AUTO: str = "auto"
    FAISS: str = "faiss"
    PYNNDESCENT: str = "pynndescent"
    SKLEARN: str = "sklearn"
    BLAS: str = "blas"


class _Metrics(NamedTuple):
    EUCLIDEAN: str = "euclidean"
    COSINE: str = "cosine"


class _GraphModes(NamedTuple):
    CONNECTIVITY: str = "connectivity"
    DISTANCE: str = "distance"


#: Backend names accepted by :func:`knn` (``"auto"`` picks one of the others).
BACKENDS = _Backends()
#: Metric names accepted by :func:`knn`.
METRICS = _Metrics()
#: ``mode`` values accepted by :func:`knn_graph`.
GRAPH_MODES = _GraphModes()

#: With ``backend="auto"`` and no faiss, pynndescent is used from this many indexed points on (exact
#: scikit-learn search below it: it is fast there and pynndescent's JIT compilation costs ~30 s per process).
AUTO_PYNNDESCENT_MIN_OBS = 50_000

# Import names of the optional backends (their pip names are in the ImportError messages).
_MODULES = {BACKENDS.FAISS: "faiss", BACKENDS.PYNNDESCENT: "pynndescent", BACKENDS.SKLEARN: "sklearn"}
_INSTALL_HINT = {
    BACKENDS.FAISS: "pip install faiss-cpu (or the 'gpu' extra: pip install 'scvi-ext[gpu]')",
    BACKENDS.PYNNDESCENT: "pip install pynndescent",
    BACKENDS.SKLEARN: "pip install scikit-learn",
}


# ----------------------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------------------
def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def _as_matrix(x: Any, argument: str) -> np.ndarray:
    """Dense 2-D float array from numpy / torch / array-like input, with readable errors."""
    if sp.issparse(x):
        raise ValueError(
            f"`{argument}` is a sparse matrix; kNN search needs a dense embedding (e.g. PCA): "
            "pass `.toarray()` if it is small."
        )
    if _is_torch_tensor(x):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"`{argument}` must be numeric, got dtype {arr.dtype}.")
    if arr.ndim != 2:
        raise ValueError(f"`{argument}` must be 2-D (n_points, n_features), got shape {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"`{argument}` is empty (shape {arr.shape}).")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise ValueError(
            f"`{argument}` contains {n_bad} NaN or infinite values; remove or impute them first."
        )
    return arr


def _check_nonzero_rows(x: np.ndarray, argument: str) -> None:
    norms = np.linalg.norm(x, axis=1)
    if np.any(norms == 0):
        raise ValueError(
            f"`{argument}` has {int((norms == 0).sum())} all-zero rows (e.g. row {int(np.flatnonzero(norms == 0)[0])}); "
            "the cosine distance is undefined for them. Remove them or use metric='euclidean'."
        )


def available_backends() -> list[str]:
    """List the kNN backends that can be imported in this environment.

    Returns
    -------
    list of str
        A subset of ``["faiss", "pynndescent", "sklearn"]``, in the order ``backend="auto"`` prefers them.
        Nothing is imported (only the presence of the packages is checked).

    Examples
    --------
    >>> "sklearn" in available_backends()
    True
    """
    return list(_installed_backends())


@functools.cache
def _installed_backends() -> tuple[str, ...]:
    # looked up once per process: find_spec walks sys.path (~3 ms), and kNN is called in hot loops
    return tuple(name for name, module in _MODULES.items() if importlib.util.find_spec(module) is not None)


def _faiss_gpu_available(faiss: Any) -> bool:
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - broken GPU drivers
        return False


def _resolve_backend(backend: str, n_data: int) -> str:
    if backend == BACKENDS.BLAS:  # numpy only: always there
        return backend
    available = available_backends()
    if backend == BACKENDS.AUTO:
        if BACKENDS.FAISS in available:
            return BACKENDS.FAISS
        if BACKENDS.PYNNDESCENT in available and n_data >= AUTO_PYNNDESCENT_MIN_OBS:
            return BACKENDS.PYNNDESCENT
        return BACKENDS.SKLEARN
    if backend not in available:
        raise ImportError(f"kNN backend {backend!r} is not installed: {_INSTALL_HINT[backend]}.")
    return backend


# ----------------------------------------------------------------------------------------------------------
# backends: each returns (indices, distances) of shape (n_query, k_search), sorted, true distances
# ----------------------------------------------------------------------------------------------------------
def _normalize_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _search_faiss(
    data: np.ndarray, query: np.ndarray, k: int, metric: str, use_gpu: bool
) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    data = np.ascontiguousarray(data, dtype=np.float32)
    query = np.ascontiguousarray(query, dtype=np.float32)
    dim = data.shape[1]
    if metric == METRICS.COSINE:
        data, query = _normalize_rows(data), _normalize_rows(query)
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexFlatL2(dim)
    if use_gpu:
        if _faiss_gpu_available(faiss):
            res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(res, 0, index)
        else:
            warnings.warn(
                "use_gpu=True but this faiss build has no GPU support or no GPU is visible; searching on the "
                "CPU (install the 'gpu' extra: pip install 'scvi-ext[gpu]').",
                RuntimeWarning,
                stacklevel=3,
            )
    index.add(data)
    sims_or_sq, indices = index.search(query, k)
    if metric == METRICS.COSINE:
        distances = np.clip(1.0 - sims_or_sq, 0.0, 2.0)
    else:  # faiss returns squared L2 distances
        distances = np.sqrt(np.maximum(sims_or_sq, 0.0))
    return indices.astype(np.int64), distances.astype(np.float32)


def _pynndescent_params(n: int) -> dict[str, int]:
    # The settings umap / scanpy / scib-metrics use.
    return {
        "n_trees": min(64, 5 + int(round(n**0.5 / 20.0))),
        "n_iters": max(5, int(round(np.log2(n)))),
        "max_candidates": 60,
    }


def _search_pynndescent(
    data: np.ndarray, query: np.ndarray | None, k: int, metric: str, random_state: int | None
) -> tuple[np.ndarray, np.ndarray]:
    from pynndescent import NNDescent

    data = np.ascontiguousarray(data, dtype=np.float32)
    n = data.shape[0]
    index = NNDescent(
        data,
        n_neighbors=min(n, max(k, 15)) if query is not None else k,
        metric=metric,
        random_state=random_state,
        low_memory=True,
        compressed=False,
        **_pynndescent_params(n),
    )
    if query is None:
        indices, distances = index.neighbor_graph
    else:
        indices, distances = index.query(np.ascontiguousarray(query, dtype=np.float32), k=k)
    if np.any(indices < 0):
        raise RuntimeError(
            "pynndescent could not find k neighbours for every point (too few points for this k?); "
            "use backend='sklearn' or backend='faiss' for an exact search."
        )
    return indices.astype(np.int64), distances.astype(np.float32)


def _search_sklearn(
    data: np.ndarray, query: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.neighbors import NearestNeighbors

    algorithm = "brute" if metric == METRICS.COSINE else "auto"
    nn = NearestNeighbors(n_neighbors=k, metric=metric, algorithm=algorithm)
    nn.fit(np.asarray(data, dtype=np.float64))
    distances, indices = nn.kneighbors(np.asarray(query, dtype=np.float64), return_distance=True)
    if metric == METRICS.COSINE:
        distances = np.clip(distances, 0.0, 2.0)
    return indices.astype(np.int64), distances.astype(np.float32)


def _drop_self(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (or, when absent, its farthest neighbour): ``k + 1 -> k`` columns.

    Robust to duplicated points, where the point itself need not come first.
    """
    n, k1 = indices.shape
    drop = indices == np.arange(n)[:, None]
    no_self = ~drop.any(axis=1)
    drop[no_self, -1] = True
    keep = ~drop
    return indices[keep].reshape(n, k1 - 1), distances[keep].reshape(n, k1 - 1)


def _sort_rows(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(distances, axis=1, kind="stable")
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(distances, order, axis=1)


# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------
def knn(
    data: Any,
    query: Any | None = None,
    k: int = 15,
    *,
    metric: str = METRICS.EUCLIDEAN,
    backend: str = BACKENDS.AUTO,
    exclude_self: bool = True,
    use_gpu: bool = False,
    random_state: int | None = 0,
    sort: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Find the ``k`` nearest neighbours of each query point among ``data``.

    Parameters
    ----------
    data
        Points to search, ``(n_data, n_features)``: a numpy array, a torch tensor (moved to CPU) or an
        array-like. Must be dense and finite.
    query
        Points whose neighbours are wanted, ``(n_query, n_features)``. ``None`` searches ``data`` against
        itself (a kNN graph).
    k
        Number of neighbours per query point.
    metric
        ``"euclidean"`` or ``"cosine"`` (``1 - cos``; rows must be non-zero).
    backend
        ``"faiss"`` (exact ``IndexFlatL2`` / ``IndexFlatIP``), ``"pynndescent"`` (approximate),
        ``"sklearn"`` (exact ``NearestNeighbors``), ``"blas"`` (exact: one BLAS product and a value partition
        per chunk of queries, numpy only; fastest for a few hundred points, Euclidean only) or ``"auto"``:
        faiss when installed, else pynndescent from :data:`AUTO_PYNNDESCENT_MIN_OBS` points on, else
        scikit-learn (``"auto"`` never picks ``"blas"``).
    exclude_self
        Only used when ``query is None``. ``True``: a point is never its own neighbour. ``False``: each row
        starts with the point itself at distance 0 (the convention of scanpy and scib-metrics), followed by
        its ``k - 1`` nearest other points.
    use_gpu
        faiss only: search on the GPU through ``faiss.StandardGpuResources`` when the installed faiss has GPU
        support and a GPU is visible (otherwise a ``RuntimeWarning`` and a CPU search).
    random_state
        Seed of pynndescent's random projection trees (ignored by the exact backends).
    sort
        ``False`` lets ``backend="blas"`` return each row's neighbours in no particular order (the same sets,
        without the per-row sort) for callers that only use the sets; the other backends always sort.

    Returns
    -------
    indices : numpy.ndarray
        ``int64`` array ``(n_query, k)`` of row indices into ``data``.
    distances : numpy.ndarray
        ``float32`` array ``(n_query, k)``, ascending along each row. Euclidean distances are the true
        distances, **not squared** (faiss' squared L2 is converted); cosine distances are ``1 - cos``.

    Raises
    ------
    ValueError
        Unknown ``metric`` / ``backend``; ``k`` not in ``[1, n_available]``; non-2-D, sparse, empty or
        non-finite input; feature counts that differ; all-zero rows with the cosine metric.
    ImportError
        An explicitly requested backend is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    >>> idx, dist = knn(X, k=1, backend="sklearn")
    >>> idx.ravel().tolist(), dist.ravel().tolist()
    ([1, 0, 1], [1.0, 1.0, 2.0])
    >>> idx, dist = knn(X, np.array([[2.9, 0.0]]), k=2, backend="sklearn")
    >>> idx.tolist()
    [[2, 1]]
    """
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not supported; expected one of {list(METRICS)}.")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; expected one of {list(BACKENDS)}.")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    k = int(k)

    self_search = query is None
    data_arr = _as_matrix(data, "data")
    n_data = data_arr.shape[0]
    query_arr = data_arr if self_search else _as_matrix(query, "query")
    if query_arr.shape[1] != data_arr.shape[1]:
        raise ValueError(
            f"`query` has {query_arr.shape[1]} features but `data` has {data_arr.shape[1]}; they must match."
        )
    n_available = n_data - 1 if (self_search and exclude_self) else n_data
    if k > n_available:
        what = "other points (the point itself is excluded)" if (self_search and exclude_self) else "points"
        raise ValueError(f"k={k} is too large: `data` has only {n_available} {what}; use k <= {n_available}.")
    if metric == METRICS.COSINE:
        _check_nonzero_rows(data_arr, "data")
        if not self_search:
            _check_nonzero_rows(query_arr, "query")

    resolved = _resolve_backend(backend, n_data)
    if resolved == BACKENDS.BLAS:
        if metric != METRICS.EUCLIDEAN:
            raise ValueError(f"backend='blas' supports metric='euclidean' only, got metric={metric!r}.")
        if use_gpu:
            warnings.warn("use_gpu=True is only used by the faiss backend, not 'blas'.", stacklevel=2)
        # a self-search masks the diagonal (duplicates stay neighbours, as with the other backends)
        if not self_search:
            return blas_knn(data_arr, query_arr, k, sort=sort)
        if exclude_self:
            return blas_knn(data_arr, None, k, sort=sort)
        rows = np.arange(n_data, dtype=np.int64)[:, None]
        indices, distances = rows, np.zeros(rows.shape, dtype=np.float32)
        if k > 1:
            idx, dist = blas_knn(data_arr, None, k - 1)
            indices, distances = np.hstack([indices, idx]), np.hstack([distances, dist])
        return indices, distances
    if use_gpu and resolved != BACKENDS.FAISS:
        warnings.warn(f"use_gpu=True is only used by the faiss backend, not {resolved!r}.", stacklevel=2)

    # In a self-search, look for the point itself plus the others, then remove it robustly (duplicates).
    k_search = (k + 1 if exclude_self else k) if self_search else k
    if resolved == BACKENDS.FAISS:
        indices, distances = _search_faiss(data_arr, query_arr, k_search, metric, use_gpu)
    elif resolved == BACKENDS.PYNNDESCENT:
        indices, distances = _search_pynndescent(
            data_arr, None if self_search else query_arr, k_search, metric, random_state
        )
    else:
        indices, distances = _search_sklearn(data_arr, query_arr, k_search, metric)

    if self_search:
        indices, distances = _drop_self(indices, distances)
        if not exclude_self:
            rows = np.arange(n_data, dtype=np.int64)[:, None]
            indices = np.concatenate([rows, indices], axis=1)
            distances = np.concatenate([np.zeros_like(rows, dtype=np.float32), distances], axis=1)
    if resolved != BACKENDS.FAISS:  # faiss returns rows sorted ascending (and dropping self keeps the order)
        indices, distances = _sort_rows(indices, distances)
    return np.ascontiguousarray(indices, dtype=np.int64), np.ascontiguousarray(distances, dtype=np.float32)


def knn_graph(
    indices: np.ndarray,
    distances: np.ndarray,
    n_obs: int,
    *,
    mode: str = GRAPH_MODES.CONNECTIVITY,
    symmetrize: bool = False,
) -> sp.csr_matrix:
    """Turn :func:`knn` output into a sparse ``(n_query, n_obs)`` adjacency matrix.

    Parameters
    ----------
    indices
        ``(n_query, k)`` neighbour indices into ``range(n_obs)``.
    distances
        ``(n_query, k)`` distances matching ``indices``.
    n_obs
        Number of indexed points (columns of the matrix).
    mode
        ``"connectivity"``: 1 for every edge; ``"distance"``: the edge's distance. Zero distances (duplicates,
        self edges) are stored explicitly but vanish in later sparse arithmetic: prefer ``"connectivity"`` for
        clustering.
    symmetrize
        Return ``max(A, A.T)`` (an undirected graph, e.g. for Leiden); needs ``n_query == n_obs``.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``float32`` matrix with ``k`` stored entries per row (before symmetrising).

    Examples
    --------
    >>> import numpy as np
    >>> idx, dist = knn(np.array([[0.0], [1.0], [3.0]]), k=1, backend="sklearn")
    >>> knn_graph(idx, dist, 3).toarray().tolist()
    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    >>> knn_graph(idx, dist, 3, symmetrize=True).toarray().tolist()
    [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    """
    if mode not in GRAPH_MODES:
        raise ValueError(f"mode={mode!r} is unknown; expected one of {list(GRAPH_MODES)}.")
    indices = np.asarray(indices)
    distances = np.asarray(distances)
    if indices.ndim != 2 or indices.shape != distances.shape:
        raise ValueError(
            f"`indices` and `distances` must be 2-D arrays of the same shape, got {indices.shape} and "
            f"{distances.shape}."
        )
    if indices.size and (indices.min() < 0 or indices.max() >= n_obs):
        raise ValueError(
            f"`indices` must lie in [0, n_obs={n_obs}), got values in [{indices.min()}, {indices.max()}]."
        )
    n_query, k = indices.shape
    if symmetrize and n_query != n_obs:
        raise ValueError(f"symmetrize=True needs a square graph, but n_query={n_query} != n_obs={n_obs}.")
    values = np.ones(indices.size, np.float32) if mode == GRAPH_MODES.CONNECTIVITY else distances.ravel()
    indptr = np.arange(0, n_query * k + 1, k)
    graph = sp.csr_matrix(
        (values.astype(np.float32), indices.ravel().astype(np.int64), indptr), shape=(n_query, n_obs)
    )
    if symmetrize:
        graph = graph.maximum(graph.T).tocsr()
    return graph
