"""A lean, exact re-run of scikit-learn's ``MiniBatchKMeans.fit`` for the scBIOT prototype steps (spec §2.4).

scBIOT part A fits 5-10 small weighted k-means per iteration (a few dozen to a few thousand points each).
scikit-learn's estimator spends most of that time in per-call overhead (parameter and array validation,
array-API namespace dispatch in every pairwise-distance call of the k-means++ seeding, thread-pool limit
contexts, and a final full-data labelling pass whose result is not used). :func:`minibatch_kmeans` performs the
same steps with the same random-number stream and the same compiled kernels
(``sklearn.cluster._k_means_lloyd.lloyd_iter_chunked_dense``, ``_k_means_minibatch._minibatch_update_dense``,
``_k_means_common._inertia_dense``), so its centres are bit-identical to
``MiniBatchKMeans(n_clusters, random_state=seed, batch_size, max_iter, n_init=1).fit(X, sample_weight=w)``
(checked by ``tests/scbiot/test_speed_exact.py`` against the installed scikit-learn). What is saved: the
estimator's validation and dispatch, a new ``RandomState`` per fit (re-seeding one per thread gives the same
stream), the inverse-CDF table of ``RandomState.choice(p=...)`` rebuilt every mini-batch (built once), the
array-API ``row_norms`` the Lloyd kernel calls every step (a dense ``einsum`` with the same values, patched in
the kernel's module only while a fit runs), the unused final labelling pass, and the k-means++ seeding's
per-step temporaries (preallocated buffers, the same float operations in the same order). When those private
kernels cannot be imported (a scikit-learn release that moved them), the estimator itself is used.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager

import numpy as np

try:  # private compiled kernels of scikit-learn (stable since 1.1; fallback below if they move)
    from sklearn.cluster import _k_means_lloyd
    from sklearn.cluster._k_means_common import _inertia_dense
    from sklearn.cluster._k_means_lloyd import lloyd_iter_chunked_dense
    from sklearn.cluster._k_means_minibatch import _minibatch_update_dense

    _HAVE_KERNELS = hasattr(_k_means_lloyd, "row_norms")
except ImportError:  # pragma: no cover - depends on the installed scikit-learn
    _HAVE_KERNELS = False

_LOCAL = threading.local()
_PATCH_LOCK = threading.Lock()
_PATCH_DEPTH = 0
_SAVED_ROW_NORMS = None
_MAX_NO_IMPROVEMENT = 10
_REASSIGNMENT_RATIO = 0.01


def _n_threads() -> int:
    """OpenMP threads of the kernels, looked up per fit as scikit-learn does (the inertia sums depend on it)."""
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    return int(_openmp_effective_n_threads())


def _dense_row_norms(X, squared: bool = False) -> np.ndarray:
    """scikit-learn's ``row_norms`` for a dense array (its numpy path: ``einsum('ij,ij->i')``), no dispatch."""
    X = np.asarray(X)
    norms = np.einsum("ij,ij->i", X, X)
    return norms if squared else np.sqrt(norms)


@contextmanager
def _lean_lloyd_row_norms():
    """Inside, the Lloyd kernel computes its centres' squared norms with :func:`_dense_row_norms`.

    ``lloyd_iter_chunked_dense`` calls the Python-level ``row_norms`` on the (always dense) centres once per
    call; its array-API dispatch costs ~25 µs, more than the kernel's own work on a 256-point mini-batch.
    The values are identical (the same ``einsum``); the module global is restored on exit (re-entrant and
    thread-safe through a depth counter).
    """
    global _PATCH_DEPTH, _SAVED_ROW_NORMS
    with _PATCH_LOCK:
        if _PATCH_DEPTH == 0:
            _SAVED_ROW_NORMS = _k_means_lloyd.row_norms
            _k_means_lloyd.row_norms = _dense_row_norms
        _PATCH_DEPTH += 1
    try:
        yield
    finally:
        with _PATCH_LOCK:
            _PATCH_DEPTH -= 1
            if _PATCH_DEPTH == 0:
                _k_means_lloyd.row_norms = _SAVED_ROW_NORMS


def _random_state(seed: int) -> np.random.RandomState:
    """``numpy.random.RandomState(seed)`` (the same stream): a per-thread generator re-seeded with the legacy
    seeding, ~1.5 µs instead of the ~120 µs of a new instance (which first draws OS entropy)."""
    rs = getattr(_LOCAL, "rs", None)
    if rs is None:
        rs = _LOCAL.rs = np.random.RandomState()
    rs.seed(seed)
    return rs


def _sq_dists_upcast(
    A64: np.ndarray, aa: np.ndarray, B64: np.ndarray, bb: np.ndarray, chunk: int
) -> np.ndarray:
    """Squared distances of rows ``A`` to rows ``B`` as scikit-learn's float32 path computes them.

    ``A64``/``B64`` are the float32 points upcast to float64, ``aa``/``bb`` their float64 squared row norms;
    blocks of ``chunk`` rows/columns are combined as ``-2 A Bᵀ + |a|² + |b|²`` in float64, cast to float32 and
    clipped at 0 (``sklearn.metrics.pairwise._euclidean_distances_upcast``).
    """
    if A64.shape[0] <= chunk and B64.shape[0] <= chunk:
        d = -2 * (A64 @ B64.T)
        d += aa[:, None]
        d += bb[None]
        out = d.astype(np.float32)
    else:
        out = np.empty((A64.shape[0], B64.shape[0]), dtype=np.float32)
        for i in range(0, A64.shape[0], chunk):
            for j in range(0, B64.shape[0], chunk):
                d = -2 * (A64[i : i + chunk] @ B64[j : j + chunk].T)
                d += aa[i : i + chunk, None]
                d += bb[None, j : j + chunk]
                out[i : i + chunk, j : j + chunk] = d
    np.maximum(out, 0, out=out)
    return out


def _upcast_chunk(n_a: int, n_b: int, d: int) -> int:
    """Chunk size of scikit-learn's ``_euclidean_distances_upcast`` (about 10 % extra memory, >= 10 MiB)."""
    maxmem = max(((n_a + n_b) * d + n_a * n_b) / 10, 10 * 2**17)
    tmp = 2.0 * d
    return max(int((-tmp + math.sqrt(tmp**2 + 4 * maxmem)) / 2), 1)


def _weighted_cdf(p: np.ndarray) -> np.ndarray:
    """The inverse-CDF table ``RandomState.choice(..., p=p)`` builds (float64 cumsum normalised by its end)."""
    cdf = np.asarray(p, dtype=np.float64).cumsum()
    cdf /= cdf[-1]
    return cdf


def _kmeanspp(X: np.ndarray, k: int, w: np.ndarray, rs: np.random.RandomState) -> np.ndarray:
    """Greedy k-means++ seeding with ``2 + ln k`` local trials (scikit-learn's ``_kmeans_plusplus``).

    Same random draws, candidates and float operations as scikit-learn (so the same centres), with the
    per-candidate-step work done in preallocated buffers: the weighted cumulative potential, the gathered
    candidate rows, their float64 ``-2 A Bᵀ + |a|² + |b|²`` block (one BLAS call per step, as scikit-learn)
    and two alternating float32 distance blocks (the kept row of one is the running ``closest``).
    """
    n, d = X.shape
    X64 = X.astype(np.float64)
    xx = np.einsum("ij,ij->i", X64, X64)
    n_trials = 2 + int(np.log(k))
    centers = np.empty((k, d), dtype=X.dtype)
    # RandomState.choice(n, p=w / w.sum()) without its per-call checks: one uniform, inverse CDF
    cid = int(_weighted_cdf(w / w.sum()).searchsorted(rs.random_sample(), side="right"))
    centers[0] = X[cid]
    closest = _sq_dists_upcast(X64[cid : cid + 1], xx[cid : cid + 1], X64, xx, _upcast_chunk(1, n, d))
    pot = closest @ w
    closest = closest[0]
    chunk = _upcast_chunk(n_trials, n, d)
    lean = n_trials <= chunk and n <= chunk  # scikit-learn's single-block case (else its chunked loop)
    last = n - 1
    X64T = X64.T
    Xm2 = -2 * X64
    w_col = w.reshape(-1, 1)
    wc = np.empty(n, dtype=np.float32)
    cum = np.empty(n, dtype=np.float32)
    blocks = (np.empty((n_trials, n), dtype=np.float32), np.empty((n_trials, n), dtype=np.float32))
    a64 = np.empty((n_trials, d))
    g = np.empty((n_trials, n))
    aa = np.empty(n_trials)
    for c in range(1, k):
        rand_vals = rs.uniform(size=n_trials)
        rand_vals *= pot
        np.multiply(w, closest, out=wc)
        np.cumsum(wc, out=cum)
        cand = cum.searchsorted(rand_vals)
        np.minimum(cand, last, out=cand)
        dc = blocks[c & 1]  # ``closest`` is a row of the other block
        if lean:
            np.take(Xm2, cand, axis=0, out=a64)
            np.matmul(a64, X64T, out=g)  # = -2 (A Bᵀ) exactly (scaling by 2 commutes with rounding)
            np.take(xx, cand, out=aa)
            g += aa[:, None]
            g += xx
            np.maximum(g, 0.0, out=dc, casting="same_kind")  # = cast then clip (rounding is monotone)
        else:
            dc[...] = _sq_dists_upcast(X64[cand], xx[cand], X64, xx, chunk)
        np.minimum(closest, dc, out=dc)
        cand_pot = dc @ w_col
        best = cand_pot.argmin()
        pot = cand_pot[best]
        closest = dc[best]
        centers[c] = X[cand[best]]
    return centers


def minibatch_kmeans(
    X: np.ndarray,
    n_clusters: int,
    seed: int,
    sample_weight: np.ndarray | None = None,
    batch_size: int | None = None,
    max_iter: int = 25,
) -> np.ndarray:
    """Centres of scikit-learn's mini-batch k-means (k-means++ init, ``n_init=1``), without its call overhead.

    Parameters
    ----------
    X
        Points ``(n, d)`` (converted to C-contiguous float32, as the paper code does).
    n_clusters
        Number of centres ``K`` (``2 <= K <= n``).
    seed
        ``random_state`` (an int seeds ``numpy.random.RandomState``, as scikit-learn does).
    sample_weight
        Optional non-negative weights ``(n,)``.
    batch_size
        Mini-batch size; default ``min(4096, max(4K, 256))`` (spec §2.4).
    max_iter
        Passes over the data (``n_steps = max_iter·n // batch``), early stop after 10 steps without improvement
        of the smoothed batch inertia.

    Returns
    -------
    numpy.ndarray
        Centres ``(K, d)`` float32, equal to ``MiniBatchKMeans(...).fit(X, sample_weight=...).cluster_centers_``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    >>> minibatch_kmeans(X, 4, seed=0).shape
    (4, 3)
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    k = int(n_clusters)
    if not 1 <= k <= n:
        raise ValueError(f"n_clusters must be in [1, n_samples={n}], got {n_clusters}.")
    bs_req = int(min(4096, max(4 * k, 256))) if batch_size is None else int(batch_size)
    if not _HAVE_KERNELS:  # pragma: no cover - depends on the installed scikit-learn
        return _sklearn_minibatch(X, k, seed, sample_weight, bs_req, max_iter)
    w = (
        np.ones(n, dtype=np.float32)
        if sample_weight is None
        else np.ascontiguousarray(sample_weight, dtype=np.float32)
    )
    rs = _random_state(seed)
    n_threads = _n_threads()
    bs = min(bs_req, n)
    init_size = 3 * bs
    if init_size < k:
        init_size = 3 * k
    init_size = min(init_size, n)
    rs.randint(0, n, init_size)  # validation subset of the (single) init: only its draw matters
    if init_size < n:
        ii = rs.randint(0, n, init_size)
        centers = _kmeanspp(X[ii], k, w[ii], rs)
    else:
        centers = _kmeanspp(X, k, w, rs)
    centers_new = np.empty_like(centers)
    counts = np.zeros(k, dtype=np.float32)
    ewa = ewa_min = None
    no_imp = 0
    since_reassign = 0
    n_steps = (int(max_iter) * n) // bs
    cdf = _weighted_cdf(w / np.sum(w))  # RandomState.choice(n, bs, p=..., replace=True) = inverse CDF
    unit = np.ones(bs, dtype=np.float32)
    labels = np.empty(bs, dtype=np.int32)
    shift = np.zeros(k, dtype=np.float32)
    alpha = min(bs * 2.0 / (n + 1), 1)
    with _lean_lloyd_row_norms():
        for i in range(n_steps):
            Xb = X[cdf.searchsorted(rs.random_sample(bs), side="right")]
            since_reassign += bs
            reassign = bool((counts == 0).any()) or since_reassign >= 10 * k
            if reassign:
                since_reassign = 0
            # E step on the mini-batch, then the incremental centre update (scikit-learn's _mini_batch_step)
            labels.fill(-1)
            lloyd_iter_chunked_dense(
                Xb, unit, centers, None, None, labels, shift, n_threads, update_centers=False
            )
            inertia = _inertia_dense(Xb, unit, centers, labels, n_threads)
            _minibatch_update_dense(Xb, unit, centers, centers_new, counts, labels, n_threads)
            if reassign and _REASSIGNMENT_RATIO > 0:
                to_re = counts < _REASSIGNMENT_RATIO * counts.max()
                n_re = int(np.count_nonzero(to_re))
                if n_re > 0.5 * bs:
                    to_re[np.argsort(counts)[int(0.5 * bs) :]] = False
                    n_re = int(np.count_nonzero(to_re))
                if n_re:  # (nothing to reassign: the count update below is a no-op, skipped)
                    centers_new[to_re] = Xb[rs.choice(bs, replace=False, size=n_re)]
                    counts[to_re] = np.min(counts[~to_re])
            centers, centers_new = centers_new, centers
            # convergence: EWA of the per-sample batch inertia, stop after 10 steps without a new minimum
            if i == 0:
                continue
            b_in = inertia / bs
            ewa = b_in if ewa is None else ewa * (1 - alpha) + b_in * alpha
            if ewa_min is None or ewa < ewa_min:
                no_imp = 0
                ewa_min = ewa
            else:
                no_imp += 1
            if no_imp >= _MAX_NO_IMPROVEMENT:
                break
    return centers


def _sklearn_minibatch(X, k, seed, w, bs, max_iter) -> np.ndarray:  # pragma: no cover - fallback
    import sklearn
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=bs, max_iter=max_iter, n_init=1)
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        km.fit(X, sample_weight=w)
    return km.cluster_centers_.astype(np.float32)
