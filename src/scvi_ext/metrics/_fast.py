"""Fast CPU integration metrics for tests and quick checks (numpy / scikit-learn + :func:`scvi_ext.neighbors.knn`).

All functions are pure: arrays in, floats out. Batch-mixing scores (:func:`batch_entropy`, :func:`ilisi_knn`,
:func:`batch_silhouette`) are in ``[0, 1]`` with 1 = well mixed; bio-conservation scores
(:func:`label_silhouette`, :func:`knn_label_accuracy`, :func:`knn_transfer_accuracy`) are in ``[0, 1]`` with
1 = labels well separated / predicted. They follow scib / scib-metrics (Luecken et al., Nat. Methods 2022) where
a counterpart exists, and are cross-checked against scib-metrics in the tests.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy.special import entr

from ..neighbors import knn
from ..neighbors._knn import BACKENDS, _as_matrix


class _FastScoreKeys(NamedTuple):
    BATCH_ENTROPY: str = "batch_entropy"
    ILISI: str = "ilisi"
    LABEL_SILHOUETTE: str = "label_silhouette"
    BATCH_SILHOUETTE: str = "batch_silhouette"
    KNN_LABEL_ACCURACY: str = "knn_label_accuracy"


class _TransferKeys(NamedTuple):
    ACCURACY: str = "accuracy"
    MACRO_F1: str = "macro_f1"


class _DefaultK(NamedTuple):
    BATCH_ENTROPY: int = 50
    ILISI: int = 30
    KNN_ACCURACY: int = 15


#: Keys of the dictionary returned by :func:`fast_scores`.
FAST_SCORE_KEYS = _FastScoreKeys()
#: Keys of the dictionary returned by :func:`knn_transfer_accuracy`.
TRANSFER_KEYS = _TransferKeys()
#: Default neighbourhood sizes of the kNN metrics.
DEFAULT_K = _DefaultK()

#: Binary search settings of the LISI Gaussian kernel (Harmony's ``compute_simpson_index`` / scib-metrics).
LISI_TOL = 1e-5
LISI_MAX_ITER = 50


# ----------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------
def _embedding(X: Any, argument: str = "X") -> np.ndarray:
    return _as_matrix(X, argument)


def _codes(values: Any, n: int, argument: str) -> tuple[np.ndarray, int]:
    """Integer codes ``0..n_categories-1`` of a 1-D label vector of length ``n`` (observed values only)."""
    if hasattr(values, "detach") and type(values).__module__.split(".")[0] == "torch":
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=object) if isinstance(values, pd.Categorical) else np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"`{argument}` must be 1-D (one value per cell), got shape {arr.shape}.")
    if arr.shape[0] != n:
        raise ValueError(f"`{argument}` has {arr.shape[0]} values but the embedding has {n} rows.")
    missing = pd.isna(arr)
    if missing.any():
        raise ValueError(
            f"`{argument}` has {int(missing.sum())} missing values (NaN/None); fill or drop them."
        )
    codes, uniques = pd.factorize(arr, sort=True)
    return codes.astype(np.int64), len(uniques)


def _check_k(k: int, argument: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"{argument} must be a positive integer, got {k!r}.")
    return int(k)


def _effective_k(k: int, n: int) -> int:
    """Clip ``k`` to the ``n - 1`` other cells available (the cell itself is never its own neighbour)."""
    if n < 2:
        raise ValueError(f"`X` has {n} row(s); kNN metrics need at least 2 cells.")
    return min(k, n - 1)


def _batch_input(X: Any, batch: Any) -> tuple[np.ndarray, np.ndarray, int]:
    X = _embedding(X)
    codes, n_batches = _codes(batch, X.shape[0], "batch")
    if n_batches < 2:
        raise ValueError(f"`batch` has {n_batches} distinct value(s); batch-mixing metrics need at least 2.")
    return X, codes, n_batches


# ----------------------------------------------------------------------------------------------------------
# kernels on precomputed neighbours (shared by the public functions and fast_scores)
# ----------------------------------------------------------------------------------------------------------
def _category_mass(
    indices: np.ndarray, codes: np.ndarray, n_categories: int, weights: np.ndarray
) -> np.ndarray:
    """``(n, n_categories)`` summed ``weights`` of each category among each row's neighbours."""
    n = indices.shape[0]
    flat = (np.arange(n)[:, None] * n_categories + codes[indices]).ravel()
    mass = np.bincount(flat, weights=weights.ravel(), minlength=n * n_categories)
    return mass.reshape(n, n_categories)


def _entropy_from_knn(indices: np.ndarray, codes: np.ndarray, n_batches: int, normalize: bool) -> float:
    p = _category_mass(indices, codes, n_batches, np.ones(indices.shape)) / indices.shape[1]
    h = entr(p).sum(axis=1)
    if normalize:
        h = h / np.log(n_batches)
    return float(h.mean())


def _lisi_weights(distances: np.ndarray, perplexity: float) -> np.ndarray:
    """Row-wise Gaussian kernel ``exp(-beta_i d_ij)`` whose entropy is ``log(perplexity)`` (Harmony's LISI).

    Same binary search as Harmony / scib-metrics (start at ``beta = 1``, double/halve until bracketed, then
    bisect; tolerance :data:`LISI_TOL`, at most :data:`LISI_MAX_ITER` steps), computed on distances shifted
    by their row minimum so the kernel never underflows (the normalised weights are unchanged).
    """
    d = distances.astype(np.float64)
    d = d - d.min(axis=1, keepdims=True)
    n = d.shape[0]
    target = np.log(perplexity)

    def hbeta(rows: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.exp(-d[rows] * beta[:, None])
        sum_p = p.sum(axis=1)  # >= 1: the nearest neighbour contributes exp(0)
        h = np.log(sum_p) + beta * (d[rows] * p).sum(axis=1) / sum_p
        return h, p / sum_p[:, None]

    all_rows = np.arange(n)
    beta = np.ones(n)
    beta_min = np.full(n, -np.inf)
    beta_max = np.full(n, np.inf)
    h, weights = hbeta(all_rows, beta)
    h_diff = h - target
    for _ in range(LISI_MAX_ITER):
        active = np.flatnonzero(np.abs(h_diff) >= LISI_TOL)
        if active.size == 0:
            break
        b, too_flat = beta[active], h_diff[active] > 0
        lo, hi = beta_min[active], beta_max[active]
        new_lo = np.where(too_flat, b, lo)
        new_hi = np.where(too_flat, hi, b)
        new_b = np.where(
            too_flat,
            np.where(np.isinf(hi), b * 2, (b + hi) / 2),
            np.where(np.isinf(lo), b / 2, (b + lo) / 2),
        )
        beta_min[active], beta_max[active], beta[active] = new_lo, new_hi, new_b
        h_new, w_new = hbeta(active, new_b)
        h_diff[active] = h_new - target
        weights[active] = w_new
    return weights


def _ilisi_from_knn(
    indices: np.ndarray, distances: np.ndarray, codes: np.ndarray, n_batches: int, perplexity: float | None
) -> float:
    if perplexity is None:
        mass = _category_mass(indices, codes, n_batches, np.ones(indices.shape)) / indices.shape[1]
    else:
        mass = _category_mass(indices, codes, n_batches, _lisi_weights(distances, perplexity))
    lisi = 1.0 / (mass**2).sum(axis=1)
    return float((np.median(lisi) - 1.0) / (n_batches - 1))


def _vote(neighbor_codes: np.ndarray, n_categories: int) -> np.ndarray:
    """Majority label per row; ties go to the tied label met first (i.e. with the nearest member)."""
    n, k = neighbor_codes.shape
    rows = np.arange(n)
    counts = np.zeros((n, n_categories))
    first = np.full((n, n_categories), k)
    for j in range(k - 1, -1, -1):  # reverse, so the earliest position is written last
        counts[rows, neighbor_codes[:, j]] += 1
        first[rows, neighbor_codes[:, j]] = j
    return np.argmax(counts * (k + 1) - first, axis=1)


def _label_accuracy_from_knn(indices: np.ndarray, codes: np.ndarray, n_labels: int) -> float:
    return float(np.mean(_vote(codes[indices], n_labels) == codes))


def _check_labels_for_silhouette(n_labels: int, n: int, argument: str) -> None:
    if not 2 <= n_labels <= n - 1:
        raise ValueError(
            f"`{argument}` has {n_labels} distinct value(s) for {n} cells; the silhouette needs between 2 and "
            "n_cells - 1 groups."
        )


def _batch_silhouette_codes(X: np.ndarray, batch: np.ndarray, labels: np.ndarray, metric: str) -> float:
    from sklearn.metrics import silhouette_samples

    per_label = []
    for label in np.unique(labels):
        mask = labels == label
        sub_batch = batch[mask]
        n_b = len(np.unique(sub_batch))
        if n_b == 1 or n_b == int(mask.sum()):
            continue
        s = silhouette_samples(X[mask], sub_batch, metric=metric)
        per_label.append(np.mean(1.0 - np.abs(s)))
    if not per_label:
        warnings.warn(
            "batch_silhouette: no label holds cells of 2 or more batches (with fewer batches than cells); "
            "returning NaN.",
            RuntimeWarning,
            stacklevel=3,
        )
        return float("nan")
    return float(np.mean(per_label))


# ----------------------------------------------------------------------------------------------------------
# public metrics
# ----------------------------------------------------------------------------------------------------------
def batch_entropy(
    X: Any,
    batch: Any,
    k: int = DEFAULT_K.BATCH_ENTROPY,
    *,
    normalize: bool = True,
    backend: str = BACKENDS.AUTO,
) -> float:
    """Mean entropy of the batch labels among each cell's ``k`` nearest neighbours.

    For cell ``i`` with batch fractions ``p_ic`` among its ``k`` Euclidean nearest neighbours (itself
    excluded), ``H_i = -sum_c p_ic log p_ic``; the score is ``mean_i H_i / log(n_batches)``.

    Parameters
    ----------
    X
        Embedding, ``(n_cells, n_dims)`` (numpy or torch).
    batch
        Batch of each cell, ``(n_cells,)``; at least 2 distinct values.
    k
        Neighbourhood size; clipped to ``n_cells - 1``.
    normalize
        Divide by ``log(n_batches)`` (score in ``[0, 1]``). ``False`` gives the natural-log entropy used as
        "mix" by scBIOT (spec §4).
    backend
        kNN backend, see :func:`scvi_ext.neighbors.knn`.

    Returns
    -------
    float
        In ``[0, 1]`` when normalised: 1 = every neighbourhood holds all batches equally, 0 = every
        neighbourhood holds one batch. With unequal batch sizes even a perfect mix stays below 1.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 5))
    >>> batch_entropy(X, rng.integers(0, 2, 200), k=30) > 0.9
    True
    >>> batch_entropy(X + np.repeat([[0.0], [50.0]], 100, axis=0), np.repeat([0, 1], 100), k=30)
    0.0
    """
    k = _check_k(k)
    X, codes, n_batches = _batch_input(X, batch)
    indices, _ = knn(X, k=_effective_k(k, X.shape[0]), backend=backend)
    return _entropy_from_knn(indices, codes, n_batches, normalize)


def ilisi_knn(
    X: Any,
    batch: Any,
    k: int = DEFAULT_K.ILISI,
    perplexity: float | None = None,
    *,
    backend: str = BACKENDS.AUTO,
) -> float:
    """iLISI-like batch mixing: median inverse Simpson index of the neighbourhood batch mix, scaled to [0, 1].

    For cell ``i`` with neighbour weights ``w_ij`` over its ``k`` nearest neighbours (itself excluded),
    ``LISI_i = 1 / sum_c (sum_{j in c} w_ij)^2`` -- the effective number of batches around it. The score is
    ``(median_i LISI_i - 1) / (n_batches - 1)``, the scaling of scib / scib-metrics' ``ilisi_knn``.

    Parameters
    ----------
    X
        Embedding, ``(n_cells, n_dims)``.
    batch
        Batch of each cell; at least 2 distinct values.
    k
        Neighbourhood size; clipped to ``n_cells - 1``.
    perplexity
        ``None``: uniform weights ``1/k``. A number: Gaussian-kernel weights ``exp(-beta_i d_ij)`` (Euclidean
        distances), ``beta_i`` tuned so the weights have perplexity ``perplexity``, as in Harmony's LISI. Note
        scib-metrics' ``ilisi_knn`` defaults to ``perplexity = k // 3`` over neighbour lists that *include*
        the cell (masked out): ``ilisi_knn(X, b, k=89, perplexity=30)`` matches its scib benchmark setting.
    backend
        kNN backend, see :func:`scvi_ext.neighbors.knn`.

    Returns
    -------
    float
        In ``[0, 1]``; 1 = neighbourhoods hold all batches equally, 0 = a single batch.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 5))
    >>> ilisi_knn(X, rng.integers(0, 3, 300)) > 0.8
    True
    >>> ilisi_knn(X + np.repeat([[0.0], [50.0], [100.0]], 100, axis=0), np.repeat([0, 1, 2], 100), perplexity=10)
    0.0
    """
    k = _check_k(k)
    if perplexity is not None and not (np.isfinite(perplexity) and perplexity > 0):
        raise ValueError(f"perplexity must be a positive number or None, got {perplexity!r}.")
    X, codes, n_batches = _batch_input(X, batch)
    k = _effective_k(k, X.shape[0])
    if perplexity is not None and perplexity > k:
        raise ValueError(
            f"perplexity={perplexity} exceeds the {k} neighbours used; use perplexity <= k (e.g. k / 3)."
        )
    indices, distances = knn(X, k=k, backend=backend)
    return _ilisi_from_knn(indices, distances, codes, n_batches, perplexity)


def label_silhouette(X: Any, labels: Any, *, metric: str = "euclidean") -> float:
    """Average silhouette width of the cell labels, rescaled to ``(s + 1) / 2`` (scib's ``silhouette_label``).

    Parameters
    ----------
    X
        Embedding, ``(n_cells, n_dims)``.
    labels
        Cell type of each cell; between 2 and ``n_cells - 1`` distinct values.
    metric
        Distance used by :func:`sklearn.metrics.silhouette_score` (``"euclidean"`` as in scib).

    Returns
    -------
    float
        In ``[0, 1]``; 1 = compact, well-separated label clusters, 0.5 = overlapping.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.r_[np.zeros((10, 2)), np.full((10, 2), 10.0)] + np.random.default_rng(0).normal(size=(20, 2))
    >>> label_silhouette(X, np.repeat(["a", "b"], 10)) > 0.9
    True
    """
    from sklearn.metrics import silhouette_score

    X = _embedding(X)
    codes, n_labels = _codes(labels, X.shape[0], "labels")
    _check_labels_for_silhouette(n_labels, X.shape[0], "labels")
    return float((silhouette_score(X, codes, metric=metric) + 1.0) / 2.0)


def batch_silhouette(X: Any, batch: Any, labels: Any, *, metric: str = "euclidean") -> float:
    """Batch silhouette within each label, ``1 - |s|`` averaged per label then over labels (scib).

    Labels whose cells come from a single batch, or from as many batches as cells, are skipped (as scib and
    scib-metrics' ``silhouette_batch`` do).

    Parameters
    ----------
    X
        Embedding, ``(n_cells, n_dims)``.
    batch
        Batch of each cell; at least 2 distinct values.
    labels
        Cell type of each cell.
    metric
        Distance used by :func:`sklearn.metrics.silhouette_samples`.

    Returns
    -------
    float
        In ``[0, 1]``; 1 = batches overlap within every label. NaN (with a ``RuntimeWarning``) when no label
        qualifies.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(size=(40, 2)), rng.normal(size=(40, 2)) + 20]
    >>> batch_silhouette(X, np.tile([0, 1], 40), np.repeat(["a", "b"], 40)) > 0.8
    True
    """
    X, batch_codes, _ = _batch_input(X, batch)
    label_codes, _ = _codes(labels, X.shape[0], "labels")
    return _batch_silhouette_codes(X, batch_codes, label_codes, metric)


def knn_label_accuracy(
    X: Any, labels: Any, k: int = DEFAULT_K.KNN_ACCURACY, *, backend: str = BACKENDS.AUTO
) -> float:
    """Leave-one-out kNN label accuracy: how often the majority label of a cell's neighbours is its own.

    Parameters
    ----------
    X
        Embedding, ``(n_cells, n_dims)``; at least 2 cells.
    labels
        Cell type of each cell.
    k
        Neighbourhood size (the cell itself excluded); clipped to ``n_cells - 1``.
    backend
        kNN backend, see :func:`scvi_ext.neighbors.knn`.

    Returns
    -------
    float
        Fraction of cells whose prediction is right. Ties between labels go to the tied label whose member
        is nearest.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.r_[np.zeros((10, 2)), np.full((10, 2), 5.0)] + np.random.default_rng(0).normal(size=(20, 2)) * 0.1
    >>> knn_label_accuracy(X, np.repeat([0, 1], 10), k=3)
    1.0
    """
    k = _check_k(k)
    X = _embedding(X)
    codes, n_labels = _codes(labels, X.shape[0], "labels")
    indices, _ = knn(X, k=_effective_k(k, X.shape[0]), backend=backend)
    return _label_accuracy_from_knn(indices, codes, n_labels)


def knn_transfer_accuracy(
    X_ref: Any,
    y_ref: Any,
    X_query: Any,
    y_query: Any,
    k: int = DEFAULT_K.KNN_ACCURACY,
    *,
    backend: str = BACKENDS.AUTO,
) -> dict[str, float]:
    """Label transfer by kNN majority vote from a reference to a query, scored against the query's labels.

    Parameters
    ----------
    X_ref
        Reference embedding, ``(n_ref, n_dims)``.
    y_ref
        Reference labels, ``(n_ref,)``.
    X_query
        Query embedding in the same space, ``(n_query, n_dims)``.
    y_query
        True query labels, ``(n_query,)``; labels absent from the reference can never be predicted.
    k
        Number of reference neighbours; clipped to ``n_ref``.
    backend
        kNN backend, see :func:`scvi_ext.neighbors.knn`.

    Returns
    -------
    dict
        ``{"accuracy": float, "macro_f1": float}`` (keys in :data:`TRANSFER_KEYS`); macro-F1 over the labels
        present in ``y_query`` or predicted, with 0 for undefined per-label scores.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = np.r_[rng.normal(size=(20, 2)), rng.normal(size=(20, 2)) + 10]
    >>> query = np.r_[rng.normal(size=(5, 2)), rng.normal(size=(5, 2)) + 10]
    >>> knn_transfer_accuracy(ref, np.repeat(["a", "b"], 20), query, np.repeat(["a", "b"], 5))
    {'accuracy': 1.0, 'macro_f1': 1.0}
    """
    from sklearn.metrics import f1_score

    k = _check_k(k)
    X_ref = _embedding(X_ref, "X_ref")
    X_query = _embedding(X_query, "X_query")
    if X_ref.shape[1] != X_query.shape[1]:
        raise ValueError(f"`X_query` has {X_query.shape[1]} dimensions but `X_ref` has {X_ref.shape[1]}.")
    _codes(y_ref, X_ref.shape[0], "y_ref")  # validation only: shape and missing values
    _codes(y_query, X_query.shape[0], "y_query")
    both = np.concatenate([np.asarray(y_ref, dtype=object), np.asarray(y_query, dtype=object)])
    codes, uniques = pd.factorize(both)
    ref_codes, query_codes = codes[: X_ref.shape[0]], codes[X_ref.shape[0] :]
    indices, _ = knn(X_ref, X_query, k=min(k, X_ref.shape[0]), backend=backend)
    predicted = _vote(ref_codes[indices], len(uniques))
    return {
        TRANSFER_KEYS.ACCURACY: float(np.mean(predicted == query_codes)),
        TRANSFER_KEYS.MACRO_F1: float(f1_score(query_codes, predicted, average="macro", zero_division=0)),
    }


def fast_scores(
    X: Any,
    batch: Any,
    labels: Any,
    k: int | None = None,
    *,
    perplexity: float | None = None,
    silhouettes: bool = True,
    backend: str = BACKENDS.AUTO,
) -> dict[str, float]:
    """All fast metrics from one kNN search.

    Parameters
    ----------
    X
        Embedding, ``(n_cells, n_dims)``.
    batch
        Batch of each cell; at least 2 distinct values.
    labels
        Cell type of each cell.
    k
        One neighbourhood size for every kNN metric, or ``None`` for each metric's default
        (:data:`DEFAULT_K`: 50 for the entropy, 30 for iLISI, 15 for the label accuracy). Clipped to
        ``n_cells - 1``.
    perplexity
        Passed to :func:`ilisi_knn`.
    silhouettes
        Compute the two silhouettes (quadratic in ``n_cells``); ``False`` leaves them out of the result.
    backend
        kNN backend, see :func:`scvi_ext.neighbors.knn`.

    Returns
    -------
    dict
        ``{name: score}`` with the names of :data:`FAST_SCORE_KEYS`: ``batch_entropy``, ``ilisi``,
        ``knn_label_accuracy`` and, with ``silhouettes=True``, ``label_silhouette`` and ``batch_silhouette``.
        The same values as the individual functions with the same arguments.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) + 20]
    >>> scores = fast_scores(X, np.tile([0, 1], 60), np.repeat(["a", "b"], 60), k=10)
    >>> sorted(scores)
    ['batch_entropy', 'batch_silhouette', 'ilisi', 'knn_label_accuracy', 'label_silhouette']
    >>> scores["knn_label_accuracy"]
    1.0
    """
    ks = DEFAULT_K if k is None else _DefaultK(*([_check_k(k)] * len(DEFAULT_K)))
    if perplexity is not None and not (np.isfinite(perplexity) and perplexity > 0):
        raise ValueError(f"perplexity must be a positive number or None, got {perplexity!r}.")
    X, batch_codes, n_batches = _batch_input(X, batch)
    label_codes, n_labels = _codes(labels, X.shape[0], "labels")
    n = X.shape[0]
    k_entropy, k_lisi, k_acc = (_effective_k(v, n) for v in ks)
    if perplexity is not None and perplexity > k_lisi:
        raise ValueError(f"perplexity={perplexity} exceeds the {k_lisi} neighbours used for iLISI.")
    if silhouettes:
        _check_labels_for_silhouette(n_labels, n, "labels")

    indices, distances = knn(X, k=max(k_entropy, k_lisi, k_acc), backend=backend)
    scores = {
        FAST_SCORE_KEYS.BATCH_ENTROPY: _entropy_from_knn(
            indices[:, :k_entropy], batch_codes, n_batches, True
        ),
        FAST_SCORE_KEYS.ILISI: _ilisi_from_knn(
            indices[:, :k_lisi], distances[:, :k_lisi], batch_codes, n_batches, perplexity
        ),
        FAST_SCORE_KEYS.KNN_LABEL_ACCURACY: _label_accuracy_from_knn(
            indices[:, :k_acc], label_codes, n_labels
        ),
    }
    if silhouettes:
        from sklearn.metrics import silhouette_score

        scores[FAST_SCORE_KEYS.LABEL_SILHOUETTE] = float((silhouette_score(X, label_codes) + 1.0) / 2.0)
        scores[FAST_SCORE_KEYS.BATCH_SILHOUETTE] = _batch_silhouette_codes(
            X, batch_codes, label_codes, "euclidean"
        )
    return scores


__all__ = [
    "DEFAULT_K",
    "FAST_SCORE_KEYS",
    "TRANSFER_KEYS",
    "batch_entropy",
    "batch_silhouette",
    "fast_scores",
    "ilisi_knn",
    "knn_label_accuracy",
    "knn_transfer_accuracy",
    "label_silhouette",
]
