r"""scBIOT paired (two-view) prototype transport: the unbalanced fused-Gromov-Wasserstein-lite barycentre of
spec §7.5 (v1.0.7 ``integrate_paired(mode="ufgw_barycenter")``).

The cell-level machinery (smoothing, damping, caps, guards, PostScale, ``J``) is the one of
:func:`scvi_ext.scbiot.integrate_ot`; this module only replaces the prototype/transport step: per-batch
prototypes in both views, a barycentre over all batches (5 outer rounds of fused feature + structure costs,
row-wise tail clipping, log-domain UOT, ``R_v = Σ_b T_bᵀ B_v / Σ_b T_bᵀ 1`` per view) and the barycentric image
of each batch's base-view prototypes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..ot import sinkhorn_unbalanced
from . import _constants as C


def prepare_view(name: str, X: np.ndarray) -> np.ndarray:
    """Spec §2.13 preset ``paired``: LSI-like views (name contains ``"lsi"``) are row-L2 normalised, others
    z-scored per dimension (population std).

    Parameters
    ----------
    name
        The ``obsm`` key of the view.
    X
        The view ``(n_obs, d)``.

    Returns
    -------
    numpy.ndarray
        The prepared view (float32).

    Examples
    --------
    >>> import numpy as np
    >>> prepare_view("X_lsi", np.ones((2, 2))).round(3).tolist()
    [[0.707, 0.707], [0.707, 0.707]]
    """
    X = np.asarray(X, dtype=np.float32)
    if is_cosine_view(name):
        return (X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-12)).astype(np.float32)
    return ((X - X.mean(0)) / (X.std(0) + 1e-8)).astype(np.float32)


def is_cosine_view(name: str) -> bool:
    """Whether a view is compared by cosine (``"lsi"`` in its key, as in the reference)."""
    return "lsi" in str(name).lower()


def _cluster_means(
    V: np.ndarray, assign: np.ndarray, centres_base: np.ndarray, X_base: np.ndarray
) -> np.ndarray:
    """Per-prototype mean of the second view over the cells assigned to it (paired rows stay paired); a
    prototype without cells takes the second view of the cell nearest to it in the base view."""
    P = len(centres_base)
    sums = np.zeros((P, V.shape[1]), dtype=np.float64)
    np.add.at(sums, assign, V)
    cnt = np.bincount(assign, minlength=P)
    out = np.empty((P, V.shape[1]), dtype=np.float32)
    keep = cnt > 0
    out[keep] = (sums[keep] / cnt[keep, None]).astype(np.float32)
    if (~keep).any():
        d = torch.cdist(torch.as_tensor(centres_base[~keep]), torch.as_tensor(X_base))
        out[~keep] = V[d.argmin(1).numpy()]
    return out


def _signature(P: torch.Tensor, k: int = C.PAIRED_STRUCT_K) -> torch.Tensor:
    """Sorted distances to the ``k`` nearest other rows, unit-L2 (a local-structure descriptor)."""
    n = P.shape[0]
    if n <= 1:
        return torch.zeros((n, k), dtype=P.dtype)
    k = int(max(1, min(k, n - 1)))
    D = torch.cdist(P, P)
    d = torch.topk(D, k + 1, dim=1, largest=False).values[:, 1:]
    return d / (torch.linalg.vector_norm(d, dim=1, keepdim=True) + 1e-12)


def _view_cost(A: torch.Tensor, B: torch.Tensor, cosine: bool) -> torch.Tensor:
    if cosine:
        An = A / (torch.linalg.vector_norm(A, dim=1, keepdim=True) + 1e-12)
        Bn = B / (torch.linalg.vector_norm(B, dim=1, keepdim=True) + 1e-12)
        return 2.0 * (1.0 - (An @ Bn.T).clamp(-1.0, 1.0))
    return torch.cdist(A, B).pow(2)


def _row_std_norm(M: torch.Tensor) -> torch.Tensor:
    s = M.std(dim=1, keepdim=True, unbiased=False)
    return M / torch.where(s < 1e-8, torch.ones_like(s), s)


def _sig_pair(P1: torch.Tensor, P2: torch.Tensor) -> torch.Tensor:
    s1, s2 = _signature(P1), _signature(P2)
    k = min(s1.shape[1], s2.shape[1])
    return 0.5 * (s1[:, :k] + s2[:, :k])


def ufgw_barycenter(
    protos1: list[np.ndarray],
    protos2: list[np.ndarray],
    R1: np.ndarray,
    R2: np.ndarray,
    *,
    reg: float,
    reg_m: float,
    cost_clip_q: float | None,
    cosine2: bool,
    n_outer: int = C.PAIRED_OUTER,
    w_view1: float = C.PAIRED_W_VIEW1,
    lam_lo: float = C.PAIRED_LAMBDA[0],
    lam_hi: float = C.PAIRED_LAMBDA[1],
    clip_big: float = C.CLIP_BIG,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    r"""Two-view unbalanced FGW-lite barycentre of per-batch prototype sets (spec §7.5).

    Each outer round ``r`` (``λ_r = lerp(lam_lo, lam_hi, r/(n_outer-1))``): feature cost
    ``w_view1·rowstd(||B1−R1||²) + (1−w_view1)·rowstd(D2)`` (``D2 = 2(1−cos)`` when ``cosine2`` else squared
    Euclidean), structural cost = squared distance of the views' mean sorted-10-NN-distance signatures,
    ``M = (1−λ_r)·feature + λ_r·structure``, row-wise tail clipping at ``cost_clip_q`` (entries above the row
    quantile become ``thr + clip_big``), log-domain UOT plan ``T_b`` (uniform masses, ``reg``, ``reg_m``),
    then ``R_v ← Σ_b T_bᵀ B_v / Σ_b T_bᵀ 1`` for both views.

    Parameters
    ----------
    protos1, protos2
        Per-batch prototypes in view 1 (base) and view 2; row ``p`` of both describes the same cells.
    R1, R2
        Initial barycentre in both views (same number of rows).
    reg, reg_m
        Entropic ε and marginal relaxation λ of the UOT.
    cost_clip_q
        Row-wise tail quantile (``None``: no clipping).
    cosine2
        Compare view 2 by cosine (LSI) instead of squared Euclidean distance.
    n_outer, w_view1, lam_lo, lam_hi, clip_big
        Outer rounds, feature weight of view 1, structure weight schedule, clipping offset.
    device
        Torch device.

    Returns
    -------
    tuple
        ``(R1, R2, plans)``: the barycentre in both views and each batch's last plan ``(P_b, Q)``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> B = [rng.normal(size=(12, 3)) for _ in range(2)]
    >>> V = [rng.normal(size=(12, 4)) for _ in range(2)]
    >>> R1, R2, T = ufgw_barycenter(B, V, B[0][:8], V[0][:8], reg=0.03, reg_m=0.4, cost_clip_q=0.9,
    ...                             cosine2=True)
    >>> R1.shape, T[1].shape
    ((8, 3), (12, 8))
    """
    dev = torch.device(device)
    dt = torch.float64 if dev.type == "cpu" else torch.float32
    B1 = [torch.as_tensor(p, dtype=dt, device=dev) for p in protos1]
    B2 = [torch.as_tensor(p, dtype=dt, device=dev) for p in protos2]
    r1 = torch.as_tensor(R1, dtype=dt, device=dev)
    r2 = torch.as_tensor(R2, dtype=dt, device=dev)
    SB = [_sig_pair(x, y) for x, y in zip(B1, B2, strict=True)]
    plans: list[torch.Tensor] = []
    for r in range(int(n_outer)):
        lam = lam_lo + (lam_hi - lam_lo) * (r / max(1, int(n_outer) - 1))
        SR = _sig_pair(r1, r2)
        plans = []
        num1 = torch.zeros_like(r1)
        num2 = torch.zeros_like(r2)
        col = torch.zeros(r1.shape[0], dtype=dt, device=dev)
        for x1, x2, sb in zip(B1, B2, SB, strict=True):
            k = min(sb.shape[1], SR.shape[1])
            Mf = w_view1 * _row_std_norm(torch.cdist(x1, r1).pow(2)) + (1.0 - w_view1) * _row_std_norm(
                _view_cost(x2, r2, cosine2)
            )
            Ms = torch.cdist(sb[:, :k], SR[:, :k]).pow(2)
            M = (1.0 - lam) * Mf + lam * Ms
            if cost_clip_q is not None:
                thr = torch.quantile(M, float(cost_clip_q), dim=1, keepdim=True)
                M = torch.where(M > thr, thr + clip_big, M)
            P, Q = M.shape
            a = torch.full((P,), 1.0 / P, dtype=dt, device=dev)
            b = torch.full((Q,), 1.0 / Q, dtype=dt, device=dev)
            T = sinkhorn_unbalanced(
                a,
                b,
                M,
                reg=reg,
                reg_m=float(reg_m),
                c=1.0,
                n_iter=C.SINKHORN_ITERS,
                tol=C.SINKHORN_TOL,
                validate=False,
                method="auto",
                compute_objective=False,
            ).plan
            plans.append(T)
            col += T.sum(0)
            num1 += T.T @ x1
            num2 += T.T @ x2
        den = col.clamp_min(1e-12)[:, None]
        r1 = num1 / den
        r2 = num2 / den
    return (
        r1.cpu().numpy().astype(np.float32),
        r2.cpu().numpy().astype(np.float32),
        [T.cpu().numpy() for T in plans],
    )


def init_barycenter(
    S1: np.ndarray, S2: np.ndarray, K_ref: int, seed: int, kmeans
) -> tuple[np.ndarray, np.ndarray]:
    """k-means (``K = min(K_ref, max(32, 2√S))``) on the pooled base-view prototypes; view 2 = the mean view-2
    prototype of each centre's members (``kmeans(X, K, seed)`` returns the centres)."""
    K = int(min(K_ref, max(32, 2 * math.sqrt(max(len(S1), 1)))))
    K = max(2, min(K, len(S1)))
    R1 = np.asarray(kmeans(S1, K, seed), dtype=np.float32)
    assign = torch.cdist(torch.as_tensor(S1), torch.as_tensor(R1)).argmin(1).numpy()
    R2 = _cluster_means(S2, assign, R1, S1)
    return R1, R2


def view2_prototypes(V: np.ndarray, nearest: np.ndarray, B: np.ndarray, X: np.ndarray) -> np.ndarray:
    """View-2 prototypes of one batch: mean of view 2 over the cells of each base-view prototype."""
    return _cluster_means(V, nearest, B, X)
