"""Trustworthiness of an embedding from kNN lists (no ``n x n`` argsort)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..neighbors import knn
from ..neighbors._knn import BACKENDS, _as_matrix

#: Rows of ``X`` whose distances are materialised at once (memory ``O(chunk x n)`` float64).
_ROW_CHUNK = 512


def _outside(ind_e: np.ndarray, ind_x: np.ndarray) -> np.ndarray:
    """Mask ``(n, k)`` of embedded neighbours that are not among the same row's original neighbours."""
    out = np.empty(ind_e.shape, dtype=bool)
    for s in range(0, ind_e.shape[0], _ROW_CHUNK):
        sl = slice(s, s + _ROW_CHUNK)
        out[sl] = ~(ind_e[sl, :, None] == ind_x[sl, None, :]).any(-1)
    return out


def trustworthiness(
    X: Any,
    X_embedded: Any,
    n_neighbors: int = 5,
    *,
    indices: np.ndarray | None = None,
    indices_embedded: np.ndarray | None = None,
    backend: str = BACKENDS.AUTO,
) -> float:
    r"""Trustworthiness (Venna & Kaski 2001): how far an embedding's neighbours are from being original neighbours.

    .. math::

        T(k) = 1 - \frac{2}{n k (2n - 3k - 1)} \sum_i \sum_{j \in N_k^{emb}(i)} \max(0, r(i, j) - k)

    with ``r(i, j)`` the rank of ``j`` among the original-space neighbours of ``i`` (1 = nearest other point).
    The value is :func:`sklearn.manifold.trustworthiness` (Euclidean) up to the order of tied distances, computed
    from the two kNN lists instead of a full ``n x n`` argsort: only embedded neighbours outside the original
    ``k``-NN need a rank, found by counting the closer points in one row of distances (memory ``O(512 n)``).

    Parameters
    ----------
    X
        Original points ``(n, d)``.
    X_embedded
        Embedding of the same points ``(n, d')``.
    n_neighbors
        ``k``; must be below ``n / 2`` (as scikit-learn requires).
    indices, indices_embedded
        Optional precomputed ``(n, k)`` Euclidean ``k``-NN of ``X`` / ``X_embedded`` (self excluded, any order
        within a row), e.g. from :func:`scvi_ext.neighbors.knn`; searched with ``backend`` when ``None``.
    backend
        kNN backend for the searches not passed in (:func:`scvi_ext.neighbors.knn`).

    Returns
    -------
    float
        Trustworthiness in ``[0, 1]`` (1: every embedded neighbour is an original neighbour).

    Raises
    ------
    ValueError
        Row counts that differ, ``n_neighbors`` not in ``[1, n / 2)``, or neighbour arrays of the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(60, 5))
    >>> trustworthiness(X, X, n_neighbors=5)
    1.0
    >>> 0.0 <= trustworthiness(X, X[:, :2], n_neighbors=5) < 1.0
    True
    """
    A = _as_matrix(X, "X")
    E = _as_matrix(X_embedded, "X_embedded")
    n = A.shape[0]
    if E.shape[0] != n:
        raise ValueError(f"`X` has {n} rows but `X_embedded` has {E.shape[0]}; they must match.")
    k = int(n_neighbors)
    if not 1 <= k < n / 2:
        raise ValueError(f"n_neighbors={n_neighbors} must be >= 1 and < n_samples / 2 = {n / 2}.")
    ind_x = knn(A, k=k, backend=backend)[0] if indices is None else np.asarray(indices)
    ind_e = knn(E, k=k, backend=backend)[0] if indices_embedded is None else np.asarray(indices_embedded)
    for name, ind in (("indices", ind_x), ("indices_embedded", ind_e)):
        if ind.shape != (n, k):
            raise ValueError(f"`{name}` must have shape ({n}, {k}), got {ind.shape}.")
    rows, cols = np.nonzero(_outside(ind_e, ind_x))
    A64 = np.asarray(A, dtype=np.float64)
    sq = np.einsum("ij,ij->i", A64, A64)
    penalty = 0
    bounds = np.searchsorted(rows, np.arange(n + 1))  # the pairs of row i are rows[bounds[i]:bounds[i + 1]]
    for s in range(0, n, _ROW_CHUNK):
        e = min(n, s + _ROW_CHUNK)
        if bounds[s] == bounds[e]:
            continue
        # squared distances as scikit-learn's float32 path: float64 products, float32 values (same ordering)
        D = A64[s:e] @ A64.T
        D *= -2.0
        D += sq[s:e, None]
        D += sq[None, :]
        D32 = D.astype(np.float32)
        np.maximum(D32, 0.0, out=D32)  # scikit-learn clips at 0 too
        D32 += 0.0  # -0.0 -> +0.0, so that the bit patterns below order like the values
        D32[np.arange(e - s), np.arange(s, e)] = np.inf  # a point is not its own neighbour
        pr, pc = rows[bounds[s] : bounds[e]] - s, cols[bounds[s] : bounds[e]]
        vals = D32[pr, ind_e[pr + s, pc]]
        D32.sort(axis=1)
        # rank (1-based) = 1 + number of other points strictly closer, for all pairs in one search: non-negative
        # float32 values order like their bit patterns, so (row << 32 | bits) is sorted across the whole block
        shift = (np.arange(e - s, dtype=np.uint64) << np.uint64(32))[:, None]
        keys = (D32.view(np.uint32).astype(np.uint64) | shift).ravel()
        q = vals.view(np.uint32).astype(np.uint64) | shift[pr, 0]
        closer = np.searchsorted(keys, q, side="left") - pr.astype(np.int64) * n
        penalty += int(np.maximum(closer + 1 - k, 0).sum())
    return float(1.0 - penalty * (2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))))
