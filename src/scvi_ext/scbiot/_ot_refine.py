r"""scBIOT part A: batch-aware unbalanced-OT refinement of an embedding (spec §2-§3).

Every kNN goes through :func:`scvi_ext.neighbors.knn`; the prototype transport uses the suite's log-domain
:func:`scvi_ext.ot.sinkhorn_unbalanced` (with ``c=1``, i.e. the ``KL(T|1)`` objective of spec §2.5) solved for
all transported batches in one batched call, and :func:`scvi_ext.ot.barycentric_projection`. Nothing is
quadratic in the number of cells: cell-level work is ``O(N k d)`` in chunks; k-means, the Eq. 1 density weights
and the overlap/trustworthiness scores run on bounded subsamples.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from .._validation import check_finite, check_n_categories
from ..metrics._trust import trustworthiness
from ..neighbors import available_backends, knn
from ..neighbors._blas import blas_knn_distances
from ..ot import barycentric_projection, sinkhorn_unbalanced
from . import _constants as C
from . import _paired
from ._constants import KEYS, METRIC_KEYS, OT_DEFAULTS, PREALIGN, PRESETS, REFERENCE, UNLABELED_ALIASES
from ._kmeans import minibatch_kmeans

if TYPE_CHECKING:
    from anndata import AnnData

_CHUNK = 32_768
# From this many cells on, the fixed X0 graph uses pynndescent under knn_backend="auto": an exact (faiss flat)
# all-pairs search is quadratic (measured: 576 s of one-time precompute at 100k cells on the shared box).
_LARGE_N_APPROX = 50_000


# ----------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------
def _lerp(a, b, t):
    return (1.0 - t) * a + t * b


def _blas_search(n: int, backend: str, use_gpu: bool) -> bool:
    """Whether a search among ``n`` points takes the ``"blas"`` backend (``backend="auto"``, CPU, 128-1024)."""
    return backend == "auto" and not use_gpu and C.BLAS_KNN_MIN_DATA <= n <= C.BLAS_KNN_MAX_DATA


def _knn(
    X: np.ndarray, k: int, backend: str, use_gpu: bool, query: np.ndarray | None = None, sort: bool = True
):
    """``(idx, dist)`` with self excluded; ``k`` reduced to what the data allow (``sort=False``: rows may be in
    any order, for callers that use only the neighbour sets).

    Under ``backend="auto"`` on the CPU, searches among ``BLAS_KNN_MIN_DATA``-``BLAS_KNN_MAX_DATA`` (128-1024)
    points use the exact ``"blas"`` backend of :func:`scvi_ext.neighbors.knn` (up to 2-3x faster than faiss'
    flat index there); everything else goes through ``backend`` (faiss when installed).
    """
    n = X.shape[0]
    k_eff = int(max(1, min(k, n - 1 if query is None else n)))
    if _blas_search(n, backend, use_gpu):
        backend = "blas"
    return knn(X, query, k=k_eff, backend=backend, use_gpu=use_gpu, sort=sort)


def _density_weights(P: np.ndarray, backend: str, use_gpu: bool) -> np.ndarray:
    """Eq. 1 weights: mean 15-NN distance within ``P`` over its mean (sparse points weigh more)."""
    if len(P) < 2:
        return np.ones(len(P), dtype=np.float32)
    if _blas_search(len(P), backend, use_gpu) and np.isfinite(P).all():
        # only the distances are needed: the same values as the "blas" search, without its index bookkeeping
        d = blas_knn_distances(P, None, int(min(C.DENSITY_K, len(P) - 1)))
    else:
        _, d = _knn(P, C.DENSITY_K, backend, use_gpu)
    m = d.mean(1)
    return (m / (m.mean() + 1e-8) + 1e-8).astype(np.float32)


def _kmeans(
    X: np.ndarray,
    n_clusters: int,
    seed: int,
    weights: np.ndarray | None,
    n_iter: int = 25,
    backend: str = C.KMEANS_BACKENDS[0],
) -> np.ndarray:
    """Weighted k-means centres (spec §2.4).

    ``"minibatch"`` (default): scikit-learn's mini-batch k-means (k-means++ init, ``batch_size = min(4096,
    max(4K, 256))``, ``max_iter = 25``, ``n_init = 1``), as the paper's code, run by
    :func:`scvi_ext.scbiot._kmeans.minibatch_kmeans` (the same steps, random stream and compiled kernels as
    ``MiniBatchKMeans.fit``, bit-identical centres, 2-3x less time on the small inputs here); ``"faiss"``: faiss Lloyd
    iterations from a random init (faster on large inputs, but a different clustering: on cellbench it
    cost 0.04 scib Total, ``benchmarks/results/scbiot/cellbench_gap.md``).
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = len(X)
    k = int(max(2, min(n_clusters, n))) if n > 1 else 1
    if k <= 1:
        return X.mean(0, keepdims=True)
    if backend == "kmeanspp":
        return _kmeanspp_lloyd(X, k, seed, weights, n_iter)
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(
            X.shape[1],
            k,
            niter=n_iter,
            seed=int(seed) % (2**31),
            min_points_per_centroid=1,
            max_points_per_centroid=1 << 30,
            verbose=False,
        )
        km.train(X, weights=None if weights is None else np.ascontiguousarray(weights, dtype=np.float32))
        return np.asarray(km.centroids, dtype=np.float32)
    # scikit-learn's MiniBatchKMeans steps with the same random stream and compiled kernels (bit-identical
    # centres), without the estimator's per-call validation/dispatch overhead (see _kmeans.py)
    return minibatch_kmeans(X, k, seed, weights, batch_size=min(4096, max(4 * k, 256)), max_iter=n_iter)


def _sq_dist(X: np.ndarray, Y: np.ndarray, x2: np.ndarray) -> np.ndarray:
    return np.maximum(x2[:, None] - 2.0 * (X @ Y.T) + (Y * Y).sum(1)[None], 0.0)


def _kmeanspp_lloyd(X: np.ndarray, k: int, seed: int, weights: np.ndarray | None, n_iter: int) -> np.ndarray:
    """Weighted greedy k-means++ seeding (``2 + ln k`` candidates per centre) then weighted Lloyd iterations.

    The same seeding as scikit-learn's k-means++, without its per-call overhead; Lloyd steps on all points
    instead of mini-batches (the inputs are at most ``kmeans_subsample`` points). Stops early once no point
    changes centre.
    """
    rng = np.random.default_rng(seed)
    n = len(X)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    x2 = (X.astype(np.float64) ** 2).sum(1)
    Xd = X.astype(np.float64)
    n_trials = 2 + int(np.log(k))
    centres = np.empty((k, X.shape[1]))
    centres[0] = Xd[rng.choice(n, p=w / w.sum())]
    closest = _sq_dist(Xd, centres[:1], x2)[:, 0]
    for c in range(1, k):
        p = w * closest
        tot = p.sum()
        cand = rng.choice(n, size=n_trials, p=p / tot) if tot > 0 else rng.choice(n, size=n_trials)
        d_cand = np.minimum(closest[None], _sq_dist(Xd[cand], Xd, x2[cand]))
        best = int(np.argmin((d_cand * w[None]).sum(1)))
        centres[c] = Xd[cand[best]]
        closest = d_cand[best]
    labels = None
    for _ in range(int(n_iter)):
        new = _sq_dist(Xd, centres, x2).argmin(1)
        if labels is not None and (new == labels).all():
            break
        labels = new
        wsum = np.bincount(labels, weights=w, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, Xd * w[:, None])
        keep = wsum > 0
        centres[keep] = sums[keep] / wsum[keep, None]
    return centres.astype(np.float32)


def _nearest(X: np.ndarray, centres: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest centres of each row of ``X`` (``blas`` when both sets are small, else faiss/sklearn)."""
    small = len(X) <= C.BLAS_KNN_MAX_DATA and len(centres) <= C.BLAS_KNN_MAX_DATA
    backend = "blas" if small else ("faiss" if "faiss" in available_backends() else "sklearn")
    return knn(centres, X, k=min(k, len(centres)), backend=backend)


def _subsample(n: int, cap: int | None, seed: int) -> np.ndarray | None:
    if cap is None or n <= cap:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=int(cap), replace=False))


def _batch_entropy(idx: np.ndarray, codes: np.ndarray, n_batches: int) -> np.ndarray:
    n = idx.shape[0]
    flat = (np.arange(n)[:, None] * n_batches + codes[idx]).ravel()  # bincount: ~10x faster than np.add.at
    counts = np.bincount(flat, minlength=n * n_batches).reshape(n, n_batches).astype(np.float32)
    p = counts / (counts.sum(1, keepdims=True) + 1e-12)
    return -(p * np.log(p + 1e-12)).sum(1)


def _mix(
    X: np.ndarray, codes: np.ndarray, n_batches: int, k: int, query_idx, backend, use_gpu, idx=None
) -> float:
    """Eq. 17: mean neighbour-batch entropy (k_eval NN among all cells; queries = all or a fixed subsample)."""
    if query_idx is None:
        if idx is None:
            idx, _ = _knn(X, k, backend, use_gpu)
    else:
        idx, _ = _knn(X, k + 1, backend, use_gpu, query=X[query_idx])
        own = idx == query_idx[:, None]  # drop the query point itself (or the farthest hit if not found)
        own[~own.any(1), -1] = True
        idx = idx[~own].reshape(len(query_idx), -1)
    return float(_batch_entropy(idx, codes, n_batches).mean())


def _overlap(
    X0: np.ndarray, X: np.ndarray, k: int, cap: int | None, seed: int, backend, use_gpu, i0=None, i1=None
) -> float:
    """Eq. 18: mean fraction of shared k-NN (kNN recomputed within a random subsample).

    Without subsampling, precomputed full-data neighbour indices ``i0`` (of X0) / ``i1`` (of X) may be passed.
    """
    sub = _subsample(len(X0), cap, seed)
    A0, A1 = (X0, X) if sub is None else (X0[sub], X[sub])
    i0 = _knn(A0, k, backend, use_gpu)[0] if (i0 is None or sub is not None) else i0.copy()
    i1 = _knn(A1, k, backend, use_gpu)[0] if (i1 is None or sub is not None) else i1.copy()
    # rows hold distinct indices, so the shared ones are the equal neighbours of the sorted concatenation
    both = np.sort(np.concatenate([i0, i1], axis=1), axis=1)
    inter = (both[:, 1:] == both[:, :-1]).sum(1)
    return float((inter / i0.shape[1]).mean())


def _rows(X: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``X[idx]`` for a 2-D index ``(n, k)``: ``index_select`` on the flat index (same values, ~25 % faster)."""
    return X.index_select(0, idx.reshape(-1)).view(*idx.shape, X.shape[1])


def _strain(X: torch.Tensor, idx0: torch.Tensor, d0: torch.Tensor, clip: float = 1.0) -> float:
    """Eq. 19: mean clipped squared relative stretch of the X0 kNN edges (chunked)."""
    tot, cnt = 0.0, 0
    for s in range(0, X.shape[0], _CHUNK):
        sl = slice(s, s + _CHUNK)
        dij = torch.linalg.vector_norm(X[sl, None, :] - _rows(X, idx0[sl]), dim=-1)
        dev = (dij / (d0[sl] + 1e-8) - 1.0).clamp(-clip, clip)
        tot += float((dev * dev).sum())
        cnt += dev.numel()
    return tot / max(cnt, 1)


def _edge_guard(X, M, idx0, d0, smin, smax, rounds: int) -> torch.Tensor:
    """Eq. 15: per-cell shrink of the move until kNN edge ratios lie in [smin_i, smax_i] (up to ``rounds``)."""
    for _ in range(int(max(1, rounds))):
        Y = X + M
        f = torch.empty(X.shape[0], dtype=X.dtype, device=X.device)
        for s in range(0, X.shape[0], _CHUNK):
            sl = slice(s, s + _CHUNK)
            r = torch.linalg.vector_norm(Y[sl, None, :] - _rows(Y, idx0[sl]), dim=-1) / (d0[sl] + 1e-8)
            f_hi = (smax[sl] / (r.amax(1) + 1e-8)).clamp(max=1.0)
            f_lo = ((r.amin(1) + 1e-8) / smin[sl]).clamp(max=1.0)
            f[sl] = torch.minimum(f_hi, f_lo)
        if bool((f >= 0.999).all()):
            break
        M = M * f[:, None]
    return M


def guard_ratios(X0: np.ndarray, X: np.ndarray, idx0: np.ndarray, d0: np.ndarray) -> np.ndarray:
    """Edge-stretch ratios ``||x_i - x_j|| / d0_ij`` over the fixed X0 kNN graph (diagnostic, Eq. 15).

    Parameters
    ----------
    X0
        Original embedding (unused except for its shape check).
    X
        Refined embedding, same shape.
    idx0, d0
        X0 kNN indices and distances ``(N, k0)``.

    Returns
    -------
    numpy.ndarray
        Ratios ``(N, k0)``.

    Examples
    --------
    >>> import numpy as np
    >>> guard_ratios(np.zeros((2, 1)), np.array([[0.0], [2.0]]), np.array([[1], [0]]), np.ones((2, 1))).ravel()
    array([2., 2.])
    """
    if X0.shape != X.shape:
        raise ValueError(f"X0 and X must have the same shape, got {X0.shape} and {X.shape}.")
    return np.linalg.norm(X[:, None, :] - X[idx0], axis=-1) / (d0 + 1e-8)


def rare_mask(rho: np.ndarray, quantile: float = C.RARE_QUANTILE) -> np.ndarray:
    """Rare cells: sparsity score at or above its ``quantile`` (top 15 % sparsest by default; spec §2.2).

    Parameters
    ----------
    rho
        Min-max scaled mean kNN distance in X0, ``(N,)``.
    quantile
        Global quantile cut-off.

    Returns
    -------
    numpy.ndarray
        Boolean mask ``(N,)``.

    Examples
    --------
    >>> import numpy as np
    >>> int(rare_mask(np.linspace(0, 1, 100)).sum())
    15
    """
    return np.asarray(rho) >= np.quantile(rho, quantile)


def smooth_shift(S: torch.Tensor, idx0: torch.Tensor, lam: float, rare: torch.Tensor) -> torch.Tensor:
    """Eq. 13: ``(1-λ) s_i + λ mean_{j∈N0(i)} s_j`` for non-rare cells; rare cells keep their raw shift.

    Parameters
    ----------
    S
        Proposed shifts ``(N, d)``.
    idx0
        Fixed X0 kNN graph ``(N, k0)``.
    lam
        Smoothing weight λ (no smoothing if ``<= 0``).
    rare
        Boolean mask ``(N,)`` of rare cells.

    Returns
    -------
    torch.Tensor
        Smoothed shifts (new tensor).

    Examples
    --------
    >>> import torch
    >>> S = torch.tensor([[0.0], [2.0]]); idx = torch.tensor([[1], [0]])
    >>> smooth_shift(S, idx, 0.5, torch.tensor([False, True])).ravel().tolist()
    [1.0, 2.0]
    """
    if lam <= 0:
        return S.clone()
    sm = torch.empty_like(S)
    for s0 in range(0, S.shape[0], _CHUNK):
        sl = slice(s0, s0 + _CHUNK)
        sm[sl] = (1 - lam) * S[sl] + lam * _rows(S, idx0[sl]).mean(1)
    return torch.where(rare[:, None], S, sm)


def _trustworthiness(
    X0: np.ndarray,
    X: np.ndarray,
    k: int,
    cap: int | None,
    seed: int,
    backend: str = "auto",
    use_gpu: bool = False,
    idx0: np.ndarray | None = None,
    idx: np.ndarray | None = None,
) -> float:
    """:func:`scvi_ext.metrics.trustworthiness` of ``X`` w.r.t. ``X0`` on a random subsample of ``cap`` cells.

    Without subsampling, the ``k``-NN lists of ``X0`` / ``X`` from the iteration may be passed (used when they
    hold exactly ``k`` neighbours; rows in any order); otherwise both are searched here.
    """
    sub = _subsample(len(X0), cap, seed)
    A0, A1 = (X0, X) if sub is None else (X0[sub], X[sub])
    n = len(A0)
    if n < 4:
        return 1.0
    k = min(k, n - 1)
    if k >= n / 2:
        k = max(1, n // 2 - 1)

    def _lists(A: np.ndarray, given: np.ndarray | None) -> np.ndarray:
        if sub is None and given is not None and given.shape[1] == k:
            return given
        return _knn(A, k, backend, use_gpu)[0]

    return trustworthiness(A0, A1, k, indices=_lists(A0, idx0), indices_embedded=_lists(A1, idx))


# ----------------------------------------------------------------------------------------------------------
# prototypes, transport, sharpening
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Pack:
    cells: np.ndarray  # indices of the cells of this (batch[, class]) set
    protos: np.ndarray  # (P, d)
    nearest: np.ndarray  # nearest prototype of each cell
    cls: int | None = None


def _batch_prototypes(Xi, K_batch, seed, kmeans_cap, backend, use_gpu, km) -> tuple[np.ndarray, np.ndarray]:
    n = len(Xi)
    K = int(min(K_batch, max(8, 2 * math.sqrt(n))))
    sub = _subsample(n, None if kmeans_cap is None else max(kmeans_cap, 4 * K), seed)
    fit = Xi if sub is None else Xi[sub]
    w = _density_weights(fit, backend, use_gpu)
    B = _kmeans(fit, K, seed, w, backend=km)
    nearest = _nearest(Xi, B)[0][:, 0]
    return B, nearest


def _prototypes(X, b, n_batches, ref_code, union, K_ref, K_batch, seed, y, kmeans_cap, backend, use_gpu, km):
    """Reference prototypes ``R`` (array, or dict class -> array) and the transported packs (spec §2.4)."""
    groups: list[tuple[np.ndarray, int | None]] = []
    classes = None if y is None else np.unique(y[y >= 0])
    for bb in range(n_batches):
        if not union and bb == ref_code:
            continue
        in_b = b == bb
        if classes is None:
            groups.append((np.flatnonzero(in_b), None))
        else:
            for c in classes:
                groups.append((np.flatnonzero(in_b & (y == c)), int(c)))
    packs: list[_Pack] = []
    for cells, cls in groups:
        if len(cells) == 0:
            continue
        s = seed + C.BATCH_SEED_OFFSET + (0 if cls is None else cls)
        B, nearest = _batch_prototypes(X[cells], K_batch, s, kmeans_cap, backend, use_gpu, km)
        packs.append(_Pack(cells, B, nearest, cls))

    def _ref_from(points: np.ndarray, floor: int, s: int) -> np.ndarray:
        K = int(min(K_ref, max(floor, 2 * math.sqrt(max(len(points), 1)))))
        sub = _subsample(len(points), None if kmeans_cap is None else max(kmeans_cap, 4 * K), s)
        fit = points if sub is None else points[sub]
        return _kmeans(fit, K, s, _density_weights(fit, backend, use_gpu), backend=km)

    if classes is None:
        if union:
            R = _ref_from(np.vstack([p.protos for p in packs]), 32, seed)
        else:
            R = _ref_from(X[b == ref_code], 16, seed)
        return R, packs
    R = {}
    for c in classes:
        if union:
            stack = [p.protos for p in packs if p.cls == int(c)]
            if stack:
                R[int(c)] = _ref_from(np.vstack(stack), 8, seed + int(c))
        else:
            pts = X[(b == ref_code) & (y == c)]
            if len(pts) == 0:
                pts = X[y == c]
            R[int(c)] = _ref_from(pts, 8, seed + int(c))
    return R, packs


def uot_barycentric(
    sources: list[np.ndarray],
    R: np.ndarray,
    *,
    reg: float,
    reg_m: float,
    cost_clip_q: float | None,
    clip_big: float = C.CLIP_BIG,
    balanced: bool = False,
    device: str | torch.device = "cpu",
    n_iter: int = C.SINKHORN_ITERS,
    tol: float = C.SINKHORN_TOL,
    solver: str = C.OT_SOLVERS[0],
    sinkhorn_method: str = "auto",
) -> list[np.ndarray]:
    r"""Barycentric images of several prototype sets under entropic unbalanced OT onto ``R`` (spec §2.5).

    For each source ``Bp``: ``C = ||Bp_p - R_q||²``; ``σ = std(C)`` (before clipping); entries above the row-wise
    ``cost_clip_q`` quantile become ``thr_p + clip_big``; ``C /= σ``; uniform masses; the objective
    ``<C,T> + reg KL(T|1) + reg_m KL(T1|a) + reg_m KL(Tᵀ1|b)`` is solved by the log-domain
    :func:`scvi_ext.ot.sinkhorn_unbalanced` (all sources in one padded, batched call); the image is
    :func:`scvi_ext.ot.barycentric_projection` of the plan.

    Parameters
    ----------
    sources
        Prototype sets ``(P_s, d)``.
    R
        Reference prototypes ``(Q, d)``.
    reg, reg_m
        Entropic regularisation ε and marginal relaxation λ.
    cost_clip_q
        Row-wise tail quantile (``None``: no clipping).
    clip_big
        Added to the threshold for clipped entries (raw cost units).
    balanced
        Ordinary (balanced) Sinkhorn instead (``reg_m`` ignored).
    device
        Torch device of the solve.
    n_iter, tol
        Sinkhorn iteration cap and tolerance (max change of ``log u``, ``log v``).
    solver
        ``"log"``: exact log-domain solve. ``"reference"``: the paper code's float32 scaling iterations with
        ``Kv``, ``Kᵀu`` and the barycentric denominator floored at float32 machine epsilon (rows with little
        kernel mass are pulled towards the origin; see :func:`integrate_ot`).
    sinkhorn_method
        ``method`` of :func:`scvi_ext.ot.sinkhorn_unbalanced` for ``solver="log"``: ``"auto"`` (default; the
        scaling-domain iterations when nothing can under/overflow, else the log domain — the same solution up to
        round-off, faster) or ``"log"`` (always the log domain).

    Returns
    -------
    list of numpy.ndarray
        Barycentric images, one ``(P_s, d)`` array per source.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> out = uot_barycentric([rng.normal(size=(5, 2))], rng.normal(size=(4, 2)), reg=0.03, reg_m=0.4,
    ...                       cost_clip_q=0.8)
    >>> out[0].shape
    (5, 2)
    """
    if not sources:
        return []
    if solver == "reference":
        return [
            _uot_barycentric_scaling32(s, R, reg, reg_m, cost_clip_q, clip_big, balanced, device, n_iter, tol)
            for s in sources
        ]
    if solver != "log":
        raise ValueError(f"solver must be one of {list(C.OT_SOLVERS)}, got {solver!r}.")
    dev = torch.device(device)
    dtype = torch.float64 if dev.type == "cpu" else torch.float32
    Rt = torch.as_tensor(np.asarray(R), dtype=dtype, device=dev)
    P_max = max(len(s) for s in sources)
    S = len(sources)
    Q, d = Rt.shape
    Bp = torch.zeros((S, P_max, d), dtype=dtype, device=dev)
    a = torch.zeros((S, P_max), dtype=dtype, device=dev)
    for i, s in enumerate(sources):
        Bp[i, : len(s)] = torch.as_tensor(np.asarray(s), dtype=dtype, device=dev)
        a[i, : len(s)] = 1.0 / len(s)
    valid = a > 0
    Cm = torch.cdist(Bp, Rt.expand(S, Q, d)).pow(2)  # (S, P, Q)
    # sigma_C over each problem's real entries, before clipping
    cnt = valid.sum(1).to(dtype) * Q
    mean = (Cm * valid[..., None]).sum((1, 2)) / cnt
    var = (((Cm - mean[:, None, None]) ** 2) * valid[..., None]).sum((1, 2)) / (cnt - 1).clamp_min(1)
    sigma = var.sqrt().clamp_min(1e-8)
    if cost_clip_q is not None:
        thr = torch.quantile(Cm, float(cost_clip_q), dim=-1, keepdim=True)
        Cm = torch.where(Cm > thr, thr + clip_big, Cm)
    Cm = Cm / sigma[:, None, None]
    Cm = torch.where(valid[..., None], Cm, torch.zeros_like(Cm))
    b = torch.full((S, Q), 1.0 / Q, dtype=dtype, device=dev)
    reg_m_eff = float("inf") if balanced else float(reg_m)
    # method="auto": scaling-domain iterations when the kernel cannot under/overflow (the same iterates, equal to
    # the log-domain solve up to round-off), log domain otherwise; the objective value is not needed
    res = sinkhorn_unbalanced(
        a,
        b,
        Cm,
        reg=reg,
        reg_m=reg_m_eff,
        c=1.0,
        n_iter=n_iter,
        tol=tol,
        validate=False,
        method=sinkhorn_method,
        compute_objective=False,
    )
    images = barycentric_projection(res.plan, Rt.expand(S, Q, d), eps=0.0, X=Bp)
    return [images[i, : len(s)].cpu().numpy().astype(np.float32) for i, s in enumerate(sources)]


@torch.no_grad()
def _uot_barycentric_scaling32(Bp, R, reg, reg_m, cost_clip_q, clip_big, balanced, device, n_iter, tol):
    """``solver="reference"``: plain float32 scaling iterations with machine-epsilon floors (spec §2.5)."""
    dev = torch.device(device)
    B = torch.as_tensor(np.asarray(Bp), dtype=torch.float32, device=dev)
    Rt = torch.as_tensor(np.asarray(R), dtype=torch.float32, device=dev)
    P, Q = B.shape[0], Rt.shape[0]
    Cm = torch.cdist(B, Rt).pow(2)
    sigma = Cm.std().clamp_min(1e-8)  # before clipping
    if cost_clip_q is not None:
        thr = torch.quantile(Cm, float(cost_clip_q), dim=1, keepdim=True)
        Cm = torch.where(Cm > thr, thr + clip_big, Cm)
    K = torch.exp(-(Cm / sigma) / reg)
    a = torch.full((P,), 1.0 / P, device=dev)
    b = torch.full((Q,), 1.0 / Q, device=dev)
    tau = 1.0 if balanced else float(reg_m) / (float(reg_m) + float(reg))
    floor = torch.finfo(torch.float32).eps
    u, v = torch.ones_like(a), torch.ones_like(b)
    for _ in range(int(n_iter)):
        u_new = (a / (K @ v).clamp_min(floor)).pow(tau)
        v_new = (b / (K.T @ u_new).clamp_min(floor)).pow(tau)
        done = bool((u_new.log() - u.log()).abs().max() < tol and (v_new.log() - v.log()).abs().max() < tol)
        u, v = u_new, v_new
        if done:
            break
    img = (K @ (v[:, None] * Rt)) / (K @ v).clamp_min(floor)[:, None]
    return img.cpu().numpy().astype(np.float32)


def _sharpen_field(
    X: np.ndarray,
    K: int,
    seed: int,
    pull: float,
    push: float,
    beta: np.ndarray,
    km: str = "minibatch",
    cap: int | None = None,
) -> np.ndarray:
    """Eqs. 10-11 plus the reference's bridge modulation (spec §2.7).

    The pseudo-centres are fitted on all cells, or on a random subsample of ``cap`` cells above that (every
    cell is still assigned), so the step stays linear in the number of cells.
    """
    n = len(X)
    K = int(max(8, min(K, n)))
    sub = _subsample(n, None if cap is None else max(cap, 4 * K), seed)
    centres = _kmeans(X if sub is None else X[sub], K, seed, None, backend=km)
    nn_idx, D = _nearest(X, centres, k=2)
    c1, c2 = centres[nn_idx[:, 0]], centres[nn_idx[:, 1]]
    d1, d2 = D[:, 0], D[:, 1]
    m = (d2 - d1) / (np.median(d2) + 1e-8)
    g = 1.0 / (1.0 + np.exp((m - 1.0) / C.SHARPEN_MARGIN_TEMP))
    q = pull * (c1 - X) + (push * g)[:, None] * (X - c2)
    q *= (1.0 - C.SHARPEN_BRIDGE_DAMP * beta)[:, None]
    near = beta > C.SHARPEN_BRIDGE_GATE
    q[near] += C.SHARPEN_BRIDGE_PUSH * (c2[near] - X[near])
    return q.astype(np.float32)


def _semi_labels(values: pd.Series) -> tuple[np.ndarray, list]:
    s = values.astype(object)
    unl = s.isna() | s.astype(str).str.strip().str.lower().isin(UNLABELED_ALIASES)
    cats = sorted(pd.unique(s[~unl].astype(str)))
    lut = {c: i for i, c in enumerate(cats)}
    y = np.array([-1 if u else lut[str(v)] for v, u in zip(s, unl, strict=True)], dtype=np.int64)
    return y, cats


def _class_guidance(X, y, beta, lam_sup, lam_repulse) -> np.ndarray:
    out = np.zeros_like(X)
    classes = np.unique(y[y >= 0])
    if len(classes) == 0:
        return out
    means = np.stack([X[y == c].mean(0) for c in classes])
    pos = {int(c): i for i, c in enumerate(classes)}
    known = np.flatnonzero(y >= 0)
    yi = np.array([pos[int(c)] for c in y[known]])
    damp = (1.0 - C.LABEL_BRIDGE_DAMP * beta[known])[:, None]
    out[known] += lam_sup * damp * (means[yi] - X[known])
    if lam_repulse > 0 and len(classes) > 1:
        Xk = X[known]
        dist = (Xk**2).sum(1)[:, None] - 2.0 * Xk @ means.T + (means**2).sum(1)[None]  # (n, C), no (n, C, d)
        dist[np.arange(len(known)), yi] = np.inf
        other = dist.argmin(1)
        out[known] += lam_repulse * damp * (X[known] - means[other])
    return out


# ----------------------------------------------------------------------------------------------------------
# pre-alignment (addresses spec §2.6: a large uniform batch offset is barely moved by the damped OT step)
# ----------------------------------------------------------------------------------------------------------
def batch_separation(X: np.ndarray, codes: np.ndarray, k: int = 15, *, backend: str = "auto") -> float:
    """Excess same-batch neighbour fraction: ``mean_i frac_same_i - sum_b (n_b/N)²`` (0 = mixed, → 1 = split).

    Parameters
    ----------
    X
        Embedding ``(N, d)``.
    codes
        Integer batch codes ``(N,)``.
    k
        Neighbours per cell.
    backend
        kNN backend of :func:`scvi_ext.neighbors.knn`.

    Returns
    -------
    float
        Observed minus expected same-batch neighbour fraction.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.r_[np.zeros((20, 2)), np.full((20, 2), 9.0)] + np.random.default_rng(0).normal(size=(40, 2))
    >>> round(batch_separation(X, np.r_[np.zeros(20, int), np.ones(20, int)], k=5), 1)
    0.5
    """
    idx, _ = _knn(np.asarray(X, dtype=np.float32), k, backend, False)
    same = (codes[idx] == codes[:, None]).mean()
    frac = np.bincount(codes) / len(codes)
    return float(same - (frac**2).sum())


def _prealign_mean(
    X: np.ndarray, b: np.ndarray, n_batches: int, ref_code: int | None, strength: float
) -> np.ndarray:
    """Translate each batch so its mean moves ``strength`` of the way to the reference mean."""
    out = X.copy()
    target = X.mean(0) if ref_code is None else X[b == ref_code].mean(0)
    for bb in range(n_batches):
        m = b == bb
        out[m] += strength * (target - X[m].mean(0))
    return out


# ----------------------------------------------------------------------------------------------------------
# main entry points
# ----------------------------------------------------------------------------------------------------------
def _check_embedding(adata: AnnData, obsm_key: str) -> np.ndarray:
    if obsm_key not in adata.obsm:
        raise KeyError(
            f"obsm_key={obsm_key!r} is not in adata.obsm (available: {sorted(adata.obsm.keys())}); compute the "
            "embedding first (e.g. sc.pp.pca -> 'X_pca', scvi_ext.scbiot.lsi -> 'X_lsi', or a model's latent)."
        )
    X = adata.obsm[obsm_key]
    if hasattr(X, "toarray"):
        X = X.toarray()
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != adata.n_obs or X.shape[1] < 1:
        raise ValueError(f"adata.obsm[{obsm_key!r}] must be a (n_obs, d) matrix, got shape {X.shape}.")
    check_finite(X, f"adata.obsm[{obsm_key!r}]")
    return np.ascontiguousarray(X)


def integrate_ot(
    adata: AnnData,
    obsm_key: str = "X_pca",
    batch_key: str = "batch",
    out_key: str = KEYS.OT_OUT,
    *,
    reference: str | int = OT_DEFAULTS["reference"],
    K_ref: int = OT_DEFAULTS["K_ref"],
    K_batch: int = OT_DEFAULTS["K_batch"],
    reg: float = OT_DEFAULTS["reg"],
    reg_m: float = OT_DEFAULTS["reg_m"],
    sharpen: float = OT_DEFAULTS["sharpen"],
    K_pseudo: int = OT_DEFAULTS["K_pseudo"],
    pull: float = OT_DEFAULTS["pull"],
    push: float = OT_DEFAULTS["push"],
    lambda0_hi: float = OT_DEFAULTS["lambda0_hi"],
    lambda0_lo: float = OT_DEFAULTS["lambda0_lo"],
    smin_bulk: float = OT_DEFAULTS["smin_bulk"],
    smax_bulk: float = OT_DEFAULTS["smax_bulk"],
    smin_bridge: float = OT_DEFAULTS["smin_bridge"],
    smax_bridge: float = OT_DEFAULTS["smax_bridge"],
    max_step_local: float = OT_DEFAULTS["max_step_local"],
    step_lo: float = OT_DEFAULTS["step_lo"],
    step_hi: float = OT_DEFAULTS["step_hi"],
    q_start: float = OT_DEFAULTS["q_start"],
    q_end: float = OT_DEFAULTS["q_end"],
    overlap0_lo: float = OT_DEFAULTS["overlap0_lo"],
    overlap0_hi: float = OT_DEFAULTS["overlap0_hi"],
    w_overlap: float = OT_DEFAULTS["w_overlap"],
    penalty_gamma: float = OT_DEFAULTS["penalty_gamma"],
    w_strain: float = OT_DEFAULTS["w_strain"],
    k_local: int = 15,
    k_eval: int = 30,
    eval_subsample: int | None = 5000,
    trust_subsample: int | None = 2500,
    mix_subsample: int | None = 20_000,
    kmeans_subsample: int | None = 20_000,
    max_iter: int = 15,
    patience: int = 3,
    tol: float = 1e-3,
    postscale: bool = True,
    fix_reference: bool = False,
    view_keys: tuple[str, str] | list[str] | None = None,
    ot_mode: str = "unbalanced",
    ot_solver: str = C.OT_SOLVERS[0],
    kmeans_backend: str = C.KMEANS_BACKENDS[0],
    label_key: str | None = None,
    lam_sup: float = 0.60,
    lam_repulse: float = 0.18,
    prealign: str | bool = PREALIGN.AUTO,
    prealign_strength: float = 1.0,
    prealign_threshold: float = 0.4,
    device: str | torch.device = "cpu",
    knn_backend: str = "auto",
    random_state: int = 0,
    verbose: bool = False,
    return_history: bool = False,
) -> dict[str, Any]:
    r"""Batch-aware unbalanced-OT refinement of an embedding (scBIOT part A; spec §2-§3).

    Iteratively moves cells so that per-batch rare-aware k-means prototypes are transported (entropic
    unbalanced OT, log-domain) onto reference prototypes; the barycentric displacement is damped near
    inter-batch bridges (``β``), combined with a cluster-sharpening field, smoothed over the fixed X0 kNN graph
    except for rare (sparsest 15 %) cells, capped per cell, shrunk by edge-stretch guards and re-standardised
    (PostScale). Each candidate is scored by
    ``J = Δmix + w_overlap·overlap0 − w_strain·Δstrain − penalties`` and kept only if it improves the best ``J``
    by more than ``tol``; the best iterate is written to ``adata.obsm[out_key]``.

    Works on any embedding: PCA (RNA), LSI (ATAC, :func:`scvi_ext.scbiot.lsi`) or the latent of any scvi-ext
    model (two-stage workflow: ``adata.obsm["X_scvi"] = model.get_latent_representation()``, then
    ``integrate_ot(adata, "X_scvi", ...)``).

    Parameters
    ----------
    adata
        AnnData with ``obsm[obsm_key]`` (dense ``N × d``) and ``obs[batch_key]`` (at least two batches).
    obsm_key
        Input embedding.
    batch_key
        Batch column.
    out_key
        ``obsm`` key of the output (``N × d`` float32).
    reference
        ``"largest"`` (most cells; that batch gets no OT shift), ``"union"`` (pooled prototypes, every batch
        moves) or a batch name.
    K_ref, K_batch
        Caps on the number of reference / per-batch prototypes (actual ``2√n`` with floors, spec §2.4).
    reg, reg_m
        Entropic ε and marginal relaxation λ of the UOT (paper: 0.028 / 0.40).
    sharpen, K_pseudo, pull, push
        Cluster-sharpening weight γ, number of pseudo-centres and pull/push strengths (Eqs. 10-12).
    lambda0_hi, lambda0_lo
        Smoothing weight annealed from ``hi`` to ``lo`` (Eq. 13).
    smin_bulk, smax_bulk, smin_bridge, smax_bridge
        Edge-stretch guard limits for bulk and bridge cells (interpolated by β, Eq. 15).
    max_step_local
        Step cap κ in units of the local X0 kNN distance (Eq. 14).
    step_lo, step_hi
        Step size η annealed from ``lo`` to ``hi``.
    q_start, q_end
        Row-wise cost tail-clipping quantile annealed from ``start`` to ``end``.
    overlap0_lo, overlap0_hi
        Overlap floor annealed from ``lo`` to ``hi`` (penalty below it).
    w_overlap, penalty_gamma, w_strain
        Weights of the objective ``J`` (Eqs. 20-21).
    k_local
        Neighbours of the local graph; the fixed X0 graph uses ``k0 = max(15, k_local + 5)``.
    k_eval
        Neighbours of the mixing and overlap scores.
    eval_subsample, trust_subsample
        Subsample sizes of the overlap and trustworthiness scores (``None``: all cells).
    mix_subsample
        Above this many cells, the mixing score uses a fixed random subsample of query cells (their k_eval NN
        among all cells), so each iteration is linear in ``N``; ``None`` always uses all cells (the reference).
    kmeans_subsample
        Above this many cells per batch (or in all, for the sharpening centres), k-means and its Eq. 1 weights
        use a random subsample (at least ``4·K``); every cell is still assigned to its nearest centre.
        ``None``: all cells (the reference).
    max_iter, patience, tol
        Iterations, early-stopping patience and the acceptance margin on ``J``.
    postscale
        Re-standardise every candidate to X0's per-dimension mean and std (Eq. 16).
    fix_reference
        Keep the reference batch fixed while the other batches move (spec §6.4, reference/query mapping): the
        reference cells get no OT shift (as always with a single reference), no sharpening (or label) shift and
        no PostScale, and their final step is zeroed after the smoothing (which would otherwise carry their
        neighbours' shifts onto them), so their rows of the output are bit-identical to the (float32) input.
        PostScale is still fitted on all cells and applied to the others. Needs a single reference batch
        (``reference="largest"`` or a batch name; not ``"union"``).
    view_keys
        Paired (two-view) mode (spec §7.5, v1.0.7 ``integrate_paired(mode="ufgw_barycenter")``; preset
        ``integrate(modality="paired")``): two ``obsm`` keys of the same cells, e.g. ``("X_pca", "X_lsi")``;
        ``obsm_key`` must be one of them (the base view, which moves and is returned). Views named ``*lsi*`` are
        row-L2 normalised and compared by cosine, others z-scored (so the output lives in the z-scored base
        view). Each iteration builds per-batch prototypes by k-means in the base view (view-2 prototype = the
        mean view 2 of the same cells, so the two rows stay paired; the reference clusters the views
        independently), a barycentre over **all** batches by 5 rounds of fused feature (0.6 view 1 + 0.4 view 2,
        row-std normalised) and structure (10-NN distance signatures, weight 0.3 -> 0.7) costs with the same
        tail clipping and log-domain UOT, and moves every batch's prototypes to their barycentric image; the
        cell-level steps are unchanged. ``reference`` then only names the batch that ``fix_reference`` keeps.
    ot_mode
        ``"unbalanced"`` (default) or ``"balanced"`` (``"largest"`` is then forced to ``"union"``).
    ot_solver
        ``"log"`` (default): the exact log-domain UOT solution. ``"reference"``: emulate the paper code's
        float32 scaling iterations, whose ``Kv``/``Kᵀu`` and barycentric denominators are floored at float32
        machine epsilon, so prototypes with little kernel mass towards the reference (``Kv < 1.2e-7``) are
        projected towards the origin (spec §2.5, "a bug we must not copy"). That artefact moves far-off
        prototypes much more and is part of the paper's scores: see
        ``benchmarks/results/scbiot/cellbench_gap.md`` for the measured effect.
    kmeans_backend
        ``"minibatch"`` (default, the paper code's scikit-learn mini-batch k-means) or ``"faiss"`` (Lloyd
        iterations; faster, a different clustering).
    label_key
        Optional ``obs`` column of (partial) labels: class-conditional prototypes plus class pull/repulsion
        (spec §2.8; values like "unknown"/NaN are unlabeled). Used by the ``"supervised"`` preset.
    lam_sup, lam_repulse
        Weights of the class pull and repulsion.
    prealign
        ``"auto"`` (default): translate every batch onto the reference mean before refining only when
        :func:`batch_separation` of the input exceeds ``prealign_threshold``; ``"none"``: the paper's algorithm
        as is; ``"mean"``: always. The paper's OT step is damped relative to the spread of the prototype
        displacements, so a large *uniform* batch offset barely moves (spec §2.6); the measurement in
        ``benchmarks/results/scbiot/prealign.md`` shows the pre-alignment fixing that (simulated offsets: batch
        entropy 0.00-0.11 -> 0.98) and helping on cellbench (separation 0.44), while on pancreas (0.38) it
        trades label silhouette for mixing and on PBMC (0.00) it changes little — hence the threshold 0.4.
    prealign_strength
        Fraction of the mean offset removed by the pre-alignment.
    prealign_threshold
        Batch separation above which ``"auto"`` pre-aligns (0.4, from that measurement).
    device
        Torch device of the OT solves and the cell-level updates (``"cpu"``, ``"cuda"``).
    knn_backend
        Backend of :func:`scvi_ext.neighbors.knn` (``"auto"``: faiss; pynndescent for the fixed X0 graph from
        50,000 cells on, where an exact all-pairs search would dominate the run). Under ``"auto"`` on the CPU,
        searches among 128 to 1,024 points (small data sets, per-batch prototype fits) use an exact BLAS
        search instead of faiss (same neighbours up to float32 near-ties, up to 2-3x faster at that size).
    random_state
        Seed (k-means, subsamples).
    verbose
        Print one line per iteration.
    return_history
        Add ``"history"`` (one dict per iteration) to the returned metrics.

    Returns
    -------
    dict
        ``{"mix", "overlap0", "strain", "tw", "it"}`` of the returned (best) iterate, plus ``"mix0"``,
        ``"n_iter_run"``, ``"prealign"`` (whether it was applied), ``"seconds"``. Also stored in
        ``adata.uns["scbiot"]``.

    Raises
    ------
    KeyError
        ``obsm_key`` / ``batch_key`` / ``label_key`` missing.
    ValueError
        Fewer than two batches; NaN/inf in the embedding; bad options.

    References
    ----------
    scBIOT: batch-aware unbalanced optimal transport for single-cell integration (Hai Hui Lab; extended
    methods Eqs. 1-22). Reference code: github.com/haihuilab/scbiot v1.0.7 ``ot/integrate.py``.

    Examples
    --------
    >>> import scvi_ext.scbiot as scb
    >>> metrics = scb.integrate_ot(adata, "X_pca", "batch")  # doctest: +SKIP
    >>> adata.obsm["X_scbiot_ot"].shape  # doctest: +SKIP
    """
    t_start = time.perf_counter()
    X_in = _check_embedding(adata, obsm_key)
    V2 = None
    cosine2 = False
    if view_keys is not None:
        view_keys = tuple(view_keys)
        if len(view_keys) != 2 or obsm_key not in view_keys:
            raise ValueError(
                f"view_keys must be two obsm keys including obsm_key={obsm_key!r}, got {view_keys!r}."
            )
        other = view_keys[1] if view_keys[0] == obsm_key else view_keys[0]
        if other == obsm_key:
            raise ValueError(f"view_keys must name two different obsm keys, got {view_keys!r}.")
        X_in = _paired.prepare_view(obsm_key, X_in)
        V2 = _paired.prepare_view(other, _check_embedding(adata, other))
        cosine2 = _paired.is_cosine_view(other)
    n_batches = check_n_categories(adata, batch_key, 2, "batch_key")
    if ot_mode not in ("unbalanced", "balanced"):
        raise ValueError(f"ot_mode must be 'unbalanced' or 'balanced', got {ot_mode!r}.")
    if ot_solver not in C.OT_SOLVERS:
        raise ValueError(f"ot_solver must be one of {list(C.OT_SOLVERS)}, got {ot_solver!r}.")
    if kmeans_backend not in C.KMEANS_BACKENDS:
        raise ValueError(f"kmeans_backend must be one of {list(C.KMEANS_BACKENDS)}, got {kmeans_backend!r}.")
    if int(max_iter) < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter!r}.")
    if reg <= 0 or reg_m <= 0:
        raise ValueError(f"reg and reg_m must be > 0, got reg={reg!r}, reg_m={reg_m!r}.")
    pa = (
        PREALIGN.MEAN
        if prealign is True
        else PREALIGN.NONE
        if prealign is False or prealign is None
        else prealign
    )
    if pa not in PREALIGN:
        raise ValueError(f"prealign must be one of {list(PREALIGN)} or a bool, got {prealign!r}.")
    dev = torch.device(device)
    bcat = pd.Categorical(adata.obs[batch_key])
    b = bcat.codes.astype(np.int64)
    cats = list(bcat.categories)
    n_batches = len(cats)
    N, d = X_in.shape
    if N < 4:
        raise ValueError(f"integrate_ot needs at least 4 cells, got {N}.")
    y = None
    if label_key is not None:
        check_obs_key_labels(adata, label_key)
        y, _ = _semi_labels(adata.obs[label_key])
        if not (y >= 0).any():
            y = None

    ref_norm = str(reference).lower() if isinstance(reference, str) else reference
    union = ref_norm == REFERENCE.UNION or (ot_mode == "balanced" and ref_norm == REFERENCE.LARGEST)
    if ref_norm == REFERENCE.LARGEST:
        ref_code = int(np.bincount(b, minlength=n_batches).argmax())
    elif ref_norm == REFERENCE.UNION:
        ref_code = None
    else:
        if reference not in cats:
            raise ValueError(f"reference={reference!r} is not a batch of {batch_key!r} (batches: {cats}).")
        ref_code = cats.index(reference)
    if union:
        ref_code = None
    fixed = None
    if fix_reference:
        if ref_code is None:
            raise ValueError(
                "fix_reference=True needs a single reference batch: pass reference='largest' or a batch name "
                f"(got reference={reference!r}, ot_mode={ot_mode!r}; 'union' and balanced 'largest' move every "
                "batch)."
            )
        fixed = b == ref_code

    backend = knn_backend
    graph_backend = "pynndescent" if (knn_backend == "auto" and N >= _LARGE_N_APPROX) else knn_backend
    use_gpu = dev.type == "cuda"

    # optional pre-alignment (spec §2.6 weakness)
    applied_prealign = False
    separation = None
    if pa != PREALIGN.NONE:
        separation = batch_separation(
            X_in if N <= 50_000 else X_in[_subsample(N, 50_000, random_state)],
            b if N <= 50_000 else b[_subsample(N, 50_000, random_state)],
            backend=backend,
        )
        if pa == PREALIGN.MEAN or separation > prealign_threshold:
            X_in = _prealign_mean(X_in, b, n_batches, ref_code, float(prealign_strength))
            applied_prealign = True
    X0 = X_in
    t_pre = time.perf_counter()

    # ---- one-time precomputation on X0 (spec §2.2)
    k0 = max(15, k_local + 5)
    mix_q = _subsample(N, mix_subsample, random_state + 101)
    full_overlap = eval_subsample is None or N <= eval_subsample
    idx_x0_eval = None
    if (mix_q is None or full_overlap) and graph_backend == backend:
        # one exact search serves both: the k0-NN graph is the first k0 columns of the sorted max(k0, k_eval)-NN
        idx_all, d_all = _knn(X0, max(k0, k_eval), backend, use_gpu)
        idx0_np, d0_np = np.ascontiguousarray(idx_all[:, :k0]), np.ascontiguousarray(d_all[:, :k0])
        idx_x0_eval = np.ascontiguousarray(idx_all[:, :k_eval])
    else:
        idx0_np, d0_np = _knn(X0, k0, graph_backend, use_gpu)
        if mix_q is None or full_overlap:
            idx_x0_eval = _knn(X0, k_eval, backend, use_gpu)[0]
    dbar0 = d0_np.mean(1)
    rho = (dbar0 - dbar0.min()) / (np.ptp(dbar0) + 1e-12)
    ent_idx = idx0_np[:, : min(C.ENTROPY_K, k_eval)]  # the 15 NN are the first 15 of the sorted k0-NN
    Hn = np.clip(_batch_entropy(ent_idx, b, n_batches) / np.log(n_batches + 1e-12), 0.0, 1.0)
    beta = (0.5 * Hn + 0.5 * rho).astype(np.float32)
    smin = _lerp(smin_bulk, smin_bridge, beta).astype(np.float32)
    smax = _lerp(smax_bulk, smax_bridge, beta).astype(np.float32)
    rare = rare_mask(rho)
    mu0 = X0.mean(0)
    sd0 = X0.std(0) + 1e-8
    mix0 = _mix(X0, b, n_batches, k_eval, mix_q, backend, use_gpu, idx=idx_x0_eval)
    tdt = torch.float32
    X0_t = torch.as_tensor(X0, dtype=tdt, device=dev)
    idx0 = torch.as_tensor(idx0_np, device=dev)
    d0 = torch.as_tensor(d0_np, dtype=tdt, device=dev)
    smin_t = torch.as_tensor(smin, device=dev)
    smax_t = torch.as_tensor(smax, device=dev)
    str0 = _strain(X0_t, idx0, d0)
    best = {"J": -np.inf, "X": X0, "mix": mix0, "overlap0": 1.0, "strain": str0, "it": 0, "idx": idx_x0_eval}
    if verbose:
        print(
            f"[scbiot] N={N} d={d} batches={n_batches} mix0={mix0:.4f} strain0={str0:.5f}"
            f"{' (pre-aligned)' if applied_prealign else ''}"
        )

    t_pre = time.perf_counter() - t_pre
    X = X0.copy()
    fixed_t = None if fixed is None else torch.as_tensor(fixed, device=dev)
    no_imp = 0
    history: list[dict] = []
    balanced = ot_mode == "balanced"
    bridge_damp = C.BRIDGE_DAMP_BALANCED if balanced else C.BRIDGE_DAMP
    it = 0
    sharp_cache = None
    rare_t = torch.as_tensor(rare, device=dev)
    gdamp_t = (1.0 - C.GLOBAL_DAMP * torch.as_tensor(beta, device=dev))[:, None]
    cap_t = max_step_local * (torch.as_tensor(dbar0, device=dev) + 1e-8)
    sd0_t, mu0_t = torch.as_tensor(sd0, device=dev), torch.as_tensor(mu0, device=dev)
    for it in range(1, int(max_iter) + 1):
        t_iter = time.perf_counter()
        t = (it - 1) / max(1, int(max_iter) - 1)
        lam = _lerp(lambda0_hi, lambda0_lo, t)
        eta = _lerp(step_lo, step_hi, t)
        qclip = _lerp(q_start, q_end, t)
        floor = _lerp(overlap0_lo, overlap0_hi, t)
        seed = random_state + it

        shift = np.zeros_like(X)
        alpha = np.ones(N, dtype=np.float32)
        if V2 is not None:
            R, packs = None, []
            for p, D in _paired_displacements(
                X,
                V2,
                b,
                n_batches,
                K_ref,
                K_batch,
                seed,
                kmeans_subsample,
                backend,
                use_gpu,
                kmeans_backend,
                reg,
                reg_m,
                qclip,
                cosine2,
                dev,
            ):
                nrm = np.linalg.norm(D, axis=1)
                s = 1.0 / (1.0 + nrm / (nrm.std() + 1e-8))
                alpha[p.cells] = s[p.nearest] * (1.0 - bridge_damp * beta[p.cells])
                shift[p.cells] = D[p.nearest]
        else:
            R, packs = _prototypes(
                X,
                b,
                n_batches,
                ref_code,
                union,
                K_ref,
                K_batch,
                seed,
                y,
                kmeans_subsample,
                backend,
                use_gpu,
                kmeans_backend,
            )
        if R is None:
            jobs = []
        elif isinstance(R, dict):
            groups = {}
            for p in packs:
                if p.cls in R:
                    groups.setdefault(p.cls, []).append(p)
            jobs = [(R[c], ps) for c, ps in groups.items()]
        else:
            jobs = [(R, packs)]
        for Rc, ps in jobs:
            images = uot_barycentric(
                [p.protos for p in ps],
                Rc,
                reg=reg,
                reg_m=reg_m,
                cost_clip_q=qclip,
                balanced=balanced,
                device=dev,
                solver=ot_solver,
            )
            for p, img in zip(ps, images, strict=True):
                D = img - p.protos
                nrm = np.linalg.norm(D, axis=1)
                s = 1.0 / (1.0 + nrm / (nrm.std() + 1e-8))
                alpha[p.cells] = s[p.nearest] * (1.0 - bridge_damp * beta[p.cells])
                shift[p.cells] = D[p.nearest]
        shift *= alpha[:, None]
        if sharpen > 0:
            # the centres' seed is fixed: an unchanged X (after a rejected candidate) gives the same field
            if sharp_cache is None or sharp_cache[0] is not X:
                sharp_cache = (
                    X,
                    _sharpen_field(
                        X,
                        K_pseudo,
                        abs(random_state) + C.SHARPEN_SEED_OFFSET,
                        pull,
                        push,
                        beta,
                        kmeans_backend,
                        kmeans_subsample,
                    ),
                )
            shift += sharpen * sharp_cache[1]
        if y is not None and (lam_sup > 0 or lam_repulse > 0):
            shift += _class_guidance(X, y, beta, lam_sup, lam_repulse)
        if fixed is not None:
            shift[fixed] = 0.0  # no OT (already), sharpening or label shift for the fixed reference

        S = torch.as_tensor(shift, dtype=tdt, device=dev)
        Xt = torch.as_tensor(X, dtype=tdt, device=dev)
        S = smooth_shift(S, idx0, lam, rare_t)
        S = S * gdamp_t
        if fixed_t is not None:
            S = S.masked_fill(fixed_t[:, None], 0.0)  # smoothing would carry the neighbours' shifts onto them
        M = eta * S
        if max_step_local > 0:
            M = M * (cap_t / (torch.linalg.vector_norm(M, dim=1) + 1e-12)).clamp(max=1.0)[:, None]
        M = _edge_guard(Xt, M, idx0, d0, smin_t, smax_t, C.GUARD_ROUNDS)
        Xc = Xt + M
        if postscale:
            Xs = (Xc - Xc.mean(0)) * (sd0_t / (Xc.std(0, unbiased=False) + 1e-8)) + mu0_t
            Xc = Xs if fixed_t is None else torch.where(fixed_t[:, None], Xc, Xs)
        st = _strain(Xc, idx0, d0)
        Xc_np = Xc.cpu().numpy()
        # without subsampling, one kNN search of the candidate serves the mixing, the overlap and (for the
        # returned iterate) the trustworthiness score; all three use only the neighbour sets
        idx_c = (
            _knn(Xc_np, k_eval, backend, use_gpu, sort=False)[0] if (mix_q is None and full_overlap) else None
        )
        mix = _mix(Xc_np, b, n_batches, k_eval, mix_q, backend, use_gpu, idx=idx_c)
        ovl = _overlap(
            X0, Xc_np, k_eval, eval_subsample, random_state + it, backend, use_gpu, i0=idx_x0_eval, i1=idx_c
        )
        pen = penalty_gamma * max(0.0, floor - ovl) ** 2 + C.RELATIVE_OVERLAP_PENALTY * max(
            0.0, best["overlap0"] - ovl
        )
        J = (mix - mix0) + w_overlap * ovl - w_strain * (st - str0) - pen
        accepted = J > best["J"] + tol
        if accepted:
            X = Xc_np
            best = {"J": J, "X": Xc_np, "mix": mix, "overlap0": ovl, "strain": st, "it": it, "idx": idx_c}
            no_imp = 0
        else:
            no_imp += 1
        history.append(
            {
                "it": it,
                "J": float(J),
                "mix": mix,
                "overlap0": ovl,
                "strain": st,
                "accepted": bool(accepted),
                "seconds": time.perf_counter() - t_iter,
            }
        )
        if verbose:
            print(
                f"[iter {it:02d}] mix={mix:.3f} overlap0={ovl:.3f} strain={st:.5f} floor~{floor:.3f} "
                f"J={J:.3f} best_it={best['it']}"
            )
        if no_imp >= patience:
            break

    out = np.asarray(best["X"], dtype=np.float32)
    tw = _trustworthiness(
        X_in,
        out,
        k_eval,
        trust_subsample if trust_subsample else eval_subsample,
        random_state,
        backend,
        use_gpu,
        idx0=idx_x0_eval,  # X0 is X_in (the pre-aligned input when a pre-alignment ran)
        idx=best["idx"],
    )
    adata.obsm[out_key] = out
    metrics = {
        METRIC_KEYS.MIX: float(best["mix"]),
        METRIC_KEYS.OVERLAP0: float(best["overlap0"]),
        METRIC_KEYS.STRAIN: float(best["strain"]),
        METRIC_KEYS.TW: tw,
        METRIC_KEYS.IT: int(best["it"]),
        "mix0": float(mix0),
        "n_iter_run": int(it),
        "prealign": applied_prealign,
        "batch_separation": separation,
        "fix_reference": bool(fix_reference),
        "paired": V2 is not None,
        "seconds": time.perf_counter() - t_start,
        "seconds_precompute": t_pre,
    }
    adata.uns[KEYS.UNS] = {k: v for k, v in metrics.items() if v is not None}
    if return_history:
        metrics["history"] = history
    return metrics


def _paired_displacements(
    X,
    V2,
    b,
    n_batches,
    K_ref,
    K_batch,
    seed,
    kmeans_cap,
    backend,
    use_gpu,
    km,
    reg,
    reg_m,
    qclip,
    cosine2,
    dev,
) -> list[tuple[_Pack, np.ndarray]]:
    """Paired mode (spec §7.5): base-view prototypes of every batch, their paired view-2 prototypes, the
    two-view UFGW-lite barycentre, and each batch's prototype displacement ``T R1 / T 1 - B``."""
    counts = np.bincount(b, minlength=n_batches)
    largest = int(counts.argmax())
    packs: list[_Pack] = []
    protos2: list[np.ndarray] = []
    for bb in range(n_batches):
        cells = np.flatnonzero(b == bb)
        if len(cells) == 0:
            continue
        cap = K_ref if bb == largest else K_batch  # the reference's per-batch cap
        B, nearest = _batch_prototypes(
            X[cells], cap, seed + C.BATCH_SEED_OFFSET + bb, kmeans_cap, backend, use_gpu, km
        )
        packs.append(_Pack(cells, B, nearest))
        protos2.append(_paired.view2_prototypes(V2[cells], nearest, B, X[cells]))
    S1 = np.vstack([p.protos for p in packs])
    S2 = np.vstack(protos2)
    R1, R2 = _paired.init_barycenter(S1, S2, K_ref, seed, lambda P, K, s: _kmeans(P, K, s, None, backend=km))
    R1, _, plans = _paired.ufgw_barycenter(
        [p.protos for p in packs],
        protos2,
        R1,
        R2,
        reg=reg,
        reg_m=reg_m,
        cost_clip_q=qclip,
        cosine2=cosine2,
        device=dev,
    )
    out = []
    for p, T in zip(packs, plans, strict=True):
        img = (T @ R1.astype(np.float64)) / (T.sum(1, keepdims=True) + 1e-12)
        out.append((p, (img - p.protos).astype(np.float32)))
    return out


def check_obs_key_labels(adata: AnnData, key: str) -> None:
    """Raise a ``KeyError`` naming ``label_key`` when it is not an ``obs`` column (NaN values are allowed).

    Parameters
    ----------
    adata
        AnnData.
    key
        Column name.

    Examples
    --------
    >>> import anndata, numpy as np, pandas as pd
    >>> a = anndata.AnnData(np.ones((2, 1)), obs=pd.DataFrame({"y": ["a", None]}, index=["c1", "c2"]))
    >>> check_obs_key_labels(a, "y")
    """
    if key not in adata.obs.columns:
        raise KeyError(
            f"label_key={key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:20]})."
        )


def integrate(adata: AnnData, modality: str = "rna", **overrides: Any) -> dict[str, Any]:
    """Run :func:`integrate_ot` with the preset of a modality (spec §2.13), overridden by ``overrides``.

    Parameters
    ----------
    adata
        AnnData with the embedding and the batch column.
    modality
        ``"rna"`` (``X_pca``, union reference), ``"atac"`` (``X_lsi``, largest reference), ``"supervised"``
        (RNA preset plus label guidance; needs ``label_key``) or ``"paired"`` (two views of the same cells,
        ``view_keys=("X_pca", "X_lsi")`` by default, fused by the UFGW-lite barycentre; spec §7.5).
    **overrides
        Any :func:`integrate_ot` argument (``obsm_key``, ``batch_key``, ``out_key``, ...).

    Returns
    -------
    dict
        The metrics of :func:`integrate_ot`.

    Examples
    --------
    >>> import scvi_ext.scbiot as scb
    >>> scb.integrate(adata, "atac", obsm_key="X_lsi", batch_key="batch")  # doctest: +SKIP
    """
    if modality not in PRESETS:
        raise ValueError(f"modality must be one of {list(PRESETS)}, got {modality!r}.")
    if modality == "supervised" and overrides.get("label_key") is None:
        raise ValueError("modality='supervised' needs label_key= naming an obs column of (partial) labels.")
    params = dict(PRESETS[modality])
    if modality == "atac":
        params.setdefault("obsm_key", KEYS.LSI)
    params.update(overrides)
    return integrate_ot(adata, **params)


__all__ = [
    "batch_separation",
    "guard_ratios",
    "integrate",
    "integrate_ot",
    "rare_mask",
    "smooth_shift",
    "uot_barycentric",
]
