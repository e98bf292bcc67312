"""Exact brute-force kNN by BLAS: one matrix product and a value partition per chunk of queries.

The ``"blas"`` backend of :func:`scvi_ext.neighbors.knn`. faiss' flat index does not use BLAS for a few hundred
queries and keeps a heap per query; ``torch.topk`` / ``np.argpartition`` are no faster. Here each chunk of
queries costs one matrix product (squared distances ``|q|^2 + |x|^2 - 2 q.x`` in float32), a *value*
``np.partition`` for each row's k-th smallest distance (several times faster than an arg-partition), a ``<=``
mask and a sort of the ``k`` survivors. Memory stays ``O(chunk x n_data)``. Results are exact up to float32
rounding of the distances: neighbour lists can differ from faiss' where two distances tie or differ by a
rounding error; ties are broken by the lower index.

Measured (``benchmarks/results/scbiot/knn_exact.md``: 30-d self-search, k = 15 / 30, one thread, faiss 1.15
``IndexFlatL2``): faiss / blas = 0.7x at 30 points, ~1.0x at 64, 1.4-2.6x at 128, 2.5-3.8x at 250-500,
1.6-1.8x at 700, 1.0-1.5x at 1 000, 0.7-1.4x at 2 000 (the per-row partition grows faster than faiss' heap).
So it pays for a few hundred points; ``backend="auto"`` does not pick it, callers that know their sizes do
(scBIOT's ``integrate_ot``).
"""

from __future__ import annotations

import numpy as np

#: Distance-matrix entries per chunk of queries (float32: 256 KiB, one buffer reused by the chunks of a call), so
#: memory is ``O(chunk x n_data)``. Measured on whole searches of 225-1 000 points (k = 30, one thread): 2^16 is
#: 1.2-1.5x faster than 2^18 from 500 points on (a 1 MiB block is a fresh allocation, page faults included,
#: in every call) and as fast below; 2^15 is no faster. The chunking does not change any value.
_CHUNK_ENTRIES = 1 << 16


def _sq_dists(
    q: np.ndarray, x: np.ndarray, q2: np.ndarray, x2: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    D = np.matmul(q, x.T, out=out)
    D *= -2.0
    D += x2[None, :]
    D += q2[:, None]
    return D


def _check(data: np.ndarray, query: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    x = np.ascontiguousarray(data, dtype=np.float32)
    q = x if query is None else np.ascontiguousarray(query, dtype=np.float32)
    if x.ndim != 2 or q.ndim != 2 or x.shape[1] != q.shape[1]:
        raise ValueError(
            f"`data` and `query` must be 2-D with the same columns, got {x.shape} and {q.shape}."
        )
    n = x.shape[0]
    n_avail = n - 1 if query is None else n
    if not 1 <= k <= n_avail:
        raise ValueError(
            f"k={k} must lie in [1, {n_avail}] for {n} indexed points (self_search={query is None})."
        )
    return x, q, n


def _blocks(x: np.ndarray, q: np.ndarray, self_search: bool):
    """Yield ``(s, e, D)`` for chunks of query rows ``s:e``: ``D`` = their squared distances to ``x`` (one buffer
    reused by all chunks; a self-search sets each point's distance to itself to ``inf``)."""
    n, m = x.shape[0], q.shape[0]
    x2 = np.einsum("ij,ij->i", x, x)
    q2 = x2 if self_search else np.einsum("ij,ij->i", q, q)
    step = max(1, _CHUNK_ENTRIES // max(n, 1))
    buf = np.empty((min(step, m), n), dtype=np.float32)
    for s in range(0, m, step):
        e = min(m, s + step)
        D = _sq_dists(q[s:e], x, q2[s:e], x2, out=buf[: e - s])
        if self_search:
            rows = np.arange(e - s)
            D[rows, rows + s] = np.inf
        yield s, e, D


def blas_knn_distances(data: np.ndarray, query: np.ndarray | None, k: int) -> np.ndarray:
    """The distances of :func:`blas_knn` without the indices (no mask, gather or index sort).

    Bit-identical to ``blas_knn(data, query, k)[1]``: the ``k`` smallest squared distances of a row are the
    same values whichever neighbours hold them, and they are sorted before the square root.

    Parameters
    ----------
    data, query, k
        As :func:`blas_knn`.

    Returns
    -------
    numpy.ndarray
        ``float32`` ``(n_query, k)`` Euclidean distances, ascending along each row.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=np.float32)
    >>> blas_knn_distances(X, None, 1).ravel().tolist()
    [1.0, 1.0, 2.0]
    """
    x, q, n = _check(data, query, k)
    d_out = np.empty((q.shape[0], k), dtype=np.float32)
    for s, e, D in _blocks(x, q, query is None):
        vals = np.partition(D, k - 1, axis=1)[:, :k] if k < n else D
        vals.sort(axis=1)
        np.sqrt(np.maximum(vals, 0.0), out=d_out[s:e])
    return d_out


def blas_knn(
    data: np.ndarray, query: np.ndarray | None, k: int, *, sort: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` exact Euclidean nearest neighbours of each query row among ``data``.

    Parameters
    ----------
    data
        ``(n_data, d)`` finite points to search.
    query
        ``(n_query, d)`` finite query points, or ``None`` for a self-search of ``data`` in which a point is never
        its own neighbour.
    k
        Neighbours per query, ``1 <= k <= n_data`` (``n_data - 1`` for a self-search).
    sort
        ``False``: the same neighbour sets, with each row in no particular order (mostly ascending index), and
        the distances in that order; saves the per-row sort when only the sets matter.

    Returns
    -------
    indices : numpy.ndarray
        ``int64`` ``(n_query, k)`` row indices into ``data``, by ascending distance (ties: lower index first).
    distances : numpy.ndarray
        ``float32`` ``(n_query, k)`` Euclidean (not squared) distances, ascending along each row.

    Raises
    ------
    ValueError
        ``k`` out of range, or arrays that are not 2-D with matching feature counts.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=np.float32)
    >>> idx, dist = blas_knn(X, None, 1)
    >>> idx.ravel().tolist(), dist.ravel().tolist()
    ([1, 0, 1], [1.0, 1.0, 2.0])
    """
    x, q, n = _check(data, query, k)
    m = q.shape[0]
    idx_out = np.empty((m, k), dtype=np.int64)
    d_out = np.empty((m, k), dtype=np.float32)
    for s, e, D in _blocks(x, q, query is None):
        rows = np.arange(e - s)
        if k < n:
            kth = np.partition(D, k - 1, axis=1)[:, k - 1 : k]
            mask = D <= kth
            cnt = mask.sum(1)
            # 1-D flatnonzero is ~7x faster than 2-D nonzero; rows hold exactly k hits unless the k-th ties
            if np.all(cnt == k):
                cols = np.flatnonzero(mask).reshape(e - s, k) - (rows * n)[:, None]
            else:  # ties at the k-th distance: keep the lowest indices among them
                cols = np.empty((e - s, k), dtype=np.int64)
                ok = np.flatnonzero(cnt == k)
                cols[ok] = np.flatnonzero(mask[ok]).reshape(-1, k) - (np.arange(len(ok)) * n)[:, None]
                for r in np.flatnonzero(cnt != k):
                    cols[r] = np.argsort(D[r], kind="stable")[:k]
        else:
            cols = np.broadcast_to(np.arange(n), (e - s, n))
        vals = np.take_along_axis(D, cols, axis=1)
        if not sort:
            idx_out[s:e] = cols
            np.sqrt(np.maximum(vals, 0.0), out=d_out[s:e])
            continue
        order = np.argsort(vals, axis=1, kind="stable")  # cols ascend, so equal distances keep index order
        idx_out[s:e] = np.take_along_axis(cols, order, axis=1)
        np.sqrt(np.maximum(np.take_along_axis(vals, order, axis=1), 0.0), out=d_out[s:e])
    return idx_out, d_out
