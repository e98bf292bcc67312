"""Log-domain (unbalanced) Sinkhorn in pure torch, batched over leading dimensions.

See :mod:`scvi_ext.ot` for the objective and the update rules.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch

from ._checks import (
    as_float_tensor,
    broadcast_batch,
    check_finite,
    check_nonnegative,
    check_positive_scalar,
)

_INF = float("inf")
# Relative tolerance on |sum(a) - sum(b)| for the balanced problem (both reg_m infinite).
_BALANCED_MASS_RTOL = 1e-4
_DEFAULT_CHECK_EVERY = 10
# Batched scaling problems without autograd on the CPU with at most this many kernel entries iterate in numpy:
# there each iteration is six tiny operations and numpy's per-call cost is a third of torch's (measured: a
# 30 x 33 problem, 50 iterations, 0.27 vs 0.79 ms; scBIOT solves ~5 such problems per refinement step).
_NUMPY_MAX_ENTRIES = 1 << 16


class OTResult(NamedTuple):
    """Result of :func:`sinkhorn_unbalanced` / :func:`sinkhorn`.

    Attributes
    ----------
    plan
        Transport plan ``T``, shape ``(..., n, m)``. Detached from the autograd graph unless the solver ran
        with ``autodiff=True``.
    cost
        Transport loss ``<C, T> = sum_ij C_ij T_ij`` per batch element, shape ``(...)``. Differentiable in
        ``C`` (with ``T`` held constant), see :func:`ot_loss`.
    f
        Row potential, shape ``(..., n)``, in cost units: ``T = exp((f_i + g_j - C_ij) / reg) * c_ij``.
    g
        Column potential, shape ``(..., m)``.
    n_iter
        Number of Sinkhorn iterations performed (one iteration = one ``f`` and one ``g`` update).
    objective
        Full (unbalanced) objective ``<C,T> + reg KL(T|c) + reg_m1 KL(T1|a) + reg_m2 KL(T'1|b)`` per batch
        element, generalized KL, marginal terms dropped where ``reg_m`` is infinite.
    converged
        Whether the largest potential change ``max |Δf| / reg, |Δg| / reg`` fell below ``tol``.
    err
        That largest change at the last convergence check.
    log
        ``None`` unless ``return_log=True``; then a dict with ``"err"`` (list of the errors at each check)
        and ``"log_plan"`` (``log T``, exact even where ``T`` itself underflows).

    Examples
    --------
    >>> import torch
    >>> res = sinkhorn(torch.full((3,), 1 / 3), torch.full((2,), 0.5), torch.rand(3, 2), reg=0.1)
    >>> plan, cost, *_ = res
    >>> plan.shape, cost.shape
    (torch.Size([3, 2]), torch.Size([]))
    """

    plan: torch.Tensor
    cost: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    n_iter: int
    objective: torch.Tensor | None = None
    converged: bool = False
    err: float = _INF
    log: dict[str, Any] | None = None


def _reg_m_pair(reg_m) -> tuple[float, float]:
    if isinstance(reg_m, tuple | list):
        if len(reg_m) != 2:
            raise ValueError(f"reg_m must be a number or a pair (reg_m_rows, reg_m_cols), got {reg_m!r}.")
        return (
            check_positive_scalar(reg_m[0], "reg_m[0]", allow_inf=True),
            check_positive_scalar(reg_m[1], "reg_m[1]", allow_inf=True),
        )
    v = check_positive_scalar(reg_m, "reg_m", allow_inf=True)
    return v, v


def _tau(reg_m: float, reg: float) -> float:
    """Exponent ``reg_m / (reg_m + reg)`` of the scaling update (1 for a hard marginal constraint)."""
    return 1.0 if math.isinf(reg_m) else reg_m / (reg_m + reg)


def _marginal(x, name: str, size: int, like: torch.Tensor, validate: bool) -> torch.Tensor:
    """Masses ``a``/``b``: ``None`` means uniform ``1/size``; otherwise shape ``(..., size)``."""
    if x is None:
        return torch.full((size,), 1.0 / size, dtype=like.dtype, device=like.device)
    t = as_float_tensor(x, name, like=like)
    if t.ndim == 0 or t.shape[-1] != size:
        axis = "rows (n)" if name == "a" else "columns (m)"
        raise ValueError(
            f"{name} must have shape (..., {size}) to match the {axis} of C, got {tuple(t.shape)}."
        )
    if validate:
        check_nonnegative(t, name)
        if bool((t.sum(-1) <= 0).any()):
            raise ValueError(f"{name} must have a positive total mass (in every batch element).")
    return t


def _scaled_update(
    log_mass: torch.Tensor, scores: torch.Tensor, dim: int, tau: float, safe: bool
) -> torch.Tensor:
    """``tau * (log_mass - logsumexp(scores, dim))``; with ``safe``, empty rows/columns map to ``-inf``.

    A row whose mass is 0, or whose kernel is zero everywhere (``c`` = 0 on its support), carries no mass.
    ``safe`` is only needed when ``log_mass`` or the log-kernel holds ``-inf`` (otherwise ``lse`` is finite).
    """
    lse = torch.logsumexp(scores, dim=dim)
    new = tau * (log_mass - lse)
    if not safe:
        return new
    dead = torch.isneginf(lse) | torch.isneginf(log_mass)
    return torch.where(dead, torch.full_like(new, -_INF), new)


def _gen_kl(p: torch.Tensor, q: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Generalized KL ``sum p log(p/q) - p + q`` with ``0 log 0 = 0``."""
    return (torch.xlogy(p, p) - torch.xlogy(p, q) - p + q).sum(dims)


_METHODS = ("log", "scaling", "auto")


def _scaling_bounds(dtype: torch.dtype) -> tuple[float, float, float]:
    """``(lo, hi, pot)`` for the scaling domain in ``dtype``.

    ``auto`` uses the scaling iterations only if every live row/column of the log-kernel has its maximum
    ``>= lo`` (half of ``log(tiny)``) and no entry exceeds ``hi`` (a quarter of ``log(max)``), and keeps them
    only if the log-scalings ``log u``, ``log v`` stay within ``[-pot, pot]`` (``pot = hi``). Then every
    ``K v`` lies in ``[exp(lo - pot), m exp(2 hi)]``, far from under/overflow (float32: ``[e^-66, m e^44]``).
    """
    fi = torch.finfo(dtype)
    lo = 0.5 * math.log(fi.tiny)
    hi = 0.25 * math.log(fi.max)
    return lo, hi, hi


def _kernel_stats(log_K: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor, masses_given: bool):
    """One host sync: the smallest row/column maximum of the log-kernel over live rows/columns, its largest
    entry, and the dead rows/columns (zero mass, or a kernel row/column that is zero everywhere).

    Returns ``(min_live_max, global_max, dead_rows, dead_cols)``; the masks are ``None`` when nothing is dead.
    """
    row_max = log_K.amax(-1)
    col_max = log_K.amax(-2)
    maxes = torch.cat([row_max, col_max], -1)
    dead = torch.isneginf(maxes)
    if masses_given:
        dead = dead | torch.isneginf(torch.cat([log_a.expand_as(row_max), log_b.expand_as(col_max)], -1))
    live_min = torch.where(dead, _INF, maxes).amin()
    any_dead, live_min, k_max = torch.stack([dead.any().to(maxes.dtype), live_min, row_max.amax()]).tolist()
    if not any_dead:
        return live_min, k_max, None, None
    n = row_max.shape[-1]
    return live_min, k_max, dead[..., :n], dead[..., n:]


def _log_iterations(log_a, log_b, log_K, alpha, beta, tau1, tau2, safe, n_iter, check_every, tol):
    """Log-domain iterations on ``alpha = log u``, ``beta = log v`` (two ``logsumexp`` per iteration)."""
    errors: list[float] = []
    converged, err, it = False, _INF, 0
    for it in range(1, int(n_iter) + 1):
        check = it % check_every == 0 or it == n_iter
        if check:
            alpha_prev, beta_prev = alpha, beta
        alpha = _scaled_update(log_a, log_K + beta[..., None, :], -1, tau1, safe)
        beta = _scaled_update(log_b, log_K + alpha[..., :, None], -2, tau2, safe)
        if check:
            with torch.no_grad():
                d_a = torch.nan_to_num((alpha - alpha_prev).abs(), nan=0.0).amax()
                d_b = torch.nan_to_num((beta - beta_prev).abs(), nan=0.0).amax()
                err = float(torch.maximum(d_a, d_b))  # the host sync
            errors.append(err)
            if err < tol:
                converged = True
                break
    return alpha, beta, it, converged, err, errors


def _check_scalings(luv, uv_prev, dead, pot) -> tuple[float, bool]:
    """Convergence check of the scaling iterations: ``(max |change of log u, log v|, in range)`` — one host sync.

    ``luv`` = ``log([u, v])`` now, ``uv_prev`` = ``[u, v]`` before the iteration, ``dead`` = mask of dead rows and
    columns (or ``None``). In range: every live ``|log u|``, ``|log v|`` is ``<= pot`` and finite (``pot=None``: no
    range check).
    """
    err_t = torch.nan_to_num((luv - torch.log(uv_prev)).abs(), nan=0.0).amax()
    if pot is None:
        return float(err_t), True
    size = (luv.masked_fill(dead, 0.0) if dead is not None else luv).abs().amax()  # nan/inf if broken
    err, size = torch.stack([err_t, size]).tolist()
    return err, bool(size <= pot)


def _scaling_result(u, v, K, luv, it, converged, err, errors):
    """The return tuple of the scaling iterations; reuses the logs of a final check iteration."""
    if luv is None:
        log_u, log_v = torch.log(u), torch.log(v)
    else:
        n = u.shape[-1]
        log_u, log_v = luv[..., :n], luv[..., n:]
    return log_u, log_v, it, converged, err, errors, u[..., :, None] * K * v[..., None, :]


def _scaling_iterations(
    a, b, log_K, alpha, beta, tau1, tau2, dead_rows, dead_cols, n_iter, check_every, tol, pot
):
    """Scaling-domain iterations ``u = (a / K v)^tau1``, ``v = (b / K^T u)^tau2`` (two mat-vecs per iteration).

    Returns ``None`` if ``log u`` / ``log v`` of a live row/column left ``[-pot, pot]`` (or became non-finite)
    at a convergence check: the caller then reruns in the log domain. ``pot=None``: no range check.
    """
    K = torch.exp(log_K)
    Kt = K.transpose(-1, -2)
    if K.ndim == 2:
        Kv, Ktu = partial(torch.mv, K), partial(torch.mv, Kt)
    else:  # row-vector products (a batched ``K @ v[..., None]`` is several times slower on CPU)

        def Kv(x):
            return torch.matmul(x.unsqueeze(-2), Kt).squeeze(-2)

        def Ktu(x):
            return torch.matmul(x.unsqueeze(-2), K).squeeze(-2)

    u, v = torch.exp(alpha), torch.exp(beta)
    masks = dead_rows is not None
    if not torch.is_grad_enabled() and K.ndim == 3 and K.device.type == "cpu" and K.numel() <= _NUMPY_MAX_ENTRIES:
        return _scaling_iterations_numpy(
            a, b, K, u, v, tau1, tau2, dead_rows, dead_cols, n_iter, check_every, tol, pot
        )
    if not torch.is_grad_enabled() and K.ndim == 3:
        # the same operations writing into preallocated buffers (bit-identical, ~40 % fewer op dispatches:
        # the solves here are small, so dispatch overhead dominates; scBIOT solves ~110 iterations per step)
        return _scaling_iterations_inplace(
            a, b, K, Kt, u, v, tau1, tau2, dead_rows, dead_cols, n_iter, check_every, tol, pot
        )
    if masks:
        dead = torch.cat([dead_rows.expand(u.shape), dead_cols.expand(v.shape)], -1)
    zero = torch.zeros((), dtype=K.dtype, device=K.device)
    errors: list[float] = []
    converged, err, it, luv = False, _INF, 0, None
    for it in range(1, int(n_iter) + 1):
        check = it % check_every == 0 or it == n_iter
        if check:
            uv_prev = torch.cat([u, v], -1)
        u = a / Kv(v)
        if tau1 != 1.0:
            u = torch.pow(u, tau1)
        if masks:
            u = torch.where(dead_rows, zero, u)
        v = b / Ktu(u)
        if tau2 != 1.0:
            v = torch.pow(v, tau2)
        if masks:
            v = torch.where(dead_cols, zero, v)
        if check:
            with torch.no_grad():
                luv = torch.log(torch.cat([u, v], -1))
                err, in_range = _check_scalings(luv, uv_prev, dead if masks else None, pot)
                if not in_range:
                    return None
            errors.append(err)
            if err < tol:
                converged = True
                break
    # with autograd the logs must come from the graph, not from the no_grad check
    return _scaling_result(u, v, K, None if torch.is_grad_enabled() else luv, it, converged, err, errors)


def _scaling_iterations_inplace(
    a, b, K, Kt, u, v, tau1, tau2, dead_rows, dead_cols, n_iter, check_every, tol, pot
):
    """:func:`_scaling_iterations` for batched problems without autograd, on preallocated buffers."""
    a = a.expand(u.shape).contiguous()
    b = b.expand(v.shape).contiguous()
    masks = dead_rows is not None
    if masks:
        dead_rows, dead_cols = dead_rows.expand(u.shape), dead_cols.expand(v.shape)
        dead = torch.cat([dead_rows, dead_cols], -1)
    u3, v3 = u.unsqueeze(-2).contiguous(), v.unsqueeze(-2).contiguous()  # (S, 1, n), (S, 1, m)
    kv, ktu = torch.empty_like(u3), torch.empty_like(v3)
    u, v = u3.squeeze(-2), v3.squeeze(-2)  # views of the buffers
    kv2, ktu2 = kv.squeeze(-2), ktu.squeeze(-2)
    errors: list[float] = []
    converged, err, it, luv = False, _INF, 0, None
    for it in range(1, int(n_iter) + 1):
        check = it % check_every == 0 or it == n_iter
        if check:
            uv_prev = torch.cat([u, v], -1)
        torch.bmm(v3, Kt, out=kv)
        torch.div(a, kv2, out=u)
        if tau1 != 1.0:
            torch.pow(u, tau1, out=u)
        if masks:
            u.masked_fill_(dead_rows, 0.0)
        torch.bmm(u3, K, out=ktu)
        torch.div(b, ktu2, out=v)
        if tau2 != 1.0:
            torch.pow(v, tau2, out=v)
        if masks:
            v.masked_fill_(dead_cols, 0.0)
        if check:
            luv = torch.log(torch.cat([u, v], -1))
            err, in_range = _check_scalings(luv, uv_prev, dead if masks else None, pot)
            if not in_range:
                return None
            errors.append(err)
            if err < tol:
                converged = True
                break
    return _scaling_result(u, v, K, luv, it, converged, err, errors)


def _scaling_iterations_numpy(a, b, K, u, v, tau1, tau2, dead_rows, dead_cols, n_iter, check_every, tol, pot):
    """:func:`_scaling_iterations` for small batched CPU problems without autograd, in numpy.

    The same updates, checks and return values (torch tensors) as :func:`_scaling_iterations_inplace`; the
    values agree up to floating-point rounding (numpy's and torch's matrix-vector kernels sum in different
    orders).
    """
    Kn = K.numpy()
    Ktn = np.ascontiguousarray(np.swapaxes(Kn, -1, -2))  # (S, m, n): Kᵀu as a contiguous matrix-vector product
    an = np.ascontiguousarray(a.expand(u.shape).numpy())
    bn = np.ascontiguousarray(b.expand(v.shape).numpy())
    n = u.shape[-1]
    uv = np.concatenate([u.numpy(), v.numpy()], -1)  # (S, n + m); u, v are views of it
    un, vn = uv[..., :n], uv[..., n:]
    kv, ktu = np.empty_like(un), np.empty_like(vn)
    masks = dead_rows is not None
    if masks:
        dr, dc = dead_rows.expand(u.shape).numpy(), dead_cols.expand(v.shape).numpy()
        dead = np.concatenate([dr, dc], -1)
    errors: list[float] = []
    converged, err, it, luv = False, _INF, 0, None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for it in range(1, int(n_iter) + 1):
            check = it % check_every == 0 or it == n_iter
            if check:
                uv_prev = uv.copy()
            np.matmul(Kn, vn[..., None], out=kv[..., None])
            np.divide(an, kv, out=un)
            if tau1 != 1.0:
                np.power(un, tau1, out=un)
            if masks:
                un[dr] = 0.0
            np.matmul(Ktn, un[..., None], out=ktu[..., None])
            np.divide(bn, ktu, out=vn)
            if tau2 != 1.0:
                np.power(vn, tau2, out=vn)
            if masks:
                vn[dc] = 0.0
            if check:
                luv = np.log(uv)
                err = float(np.nan_to_num(np.abs(luv - np.log(uv_prev)), nan=0.0).max())
                if pot is not None:
                    size = np.abs(np.where(dead, 0.0, luv) if masks else luv).max()
                    if not size <= pot:  # also nan / inf
                        return None
                errors.append(err)
                if err < tol:
                    converged = True
                    break
    u_t, v_t = torch.from_numpy(un), torch.from_numpy(vn)
    return _scaling_result(u_t, v_t, K, None if luv is None else torch.from_numpy(luv), it, converged, err, errors)


def sinkhorn_unbalanced(
    a,
    b,
    C,
    reg: float,
    reg_m: float | tuple[float, float] = _INF,
    *,
    c=None,
    n_iter: int = 1000,
    tol: float = 1e-6,
    check_every: int = _DEFAULT_CHECK_EVERY,
    warmstart: tuple[torch.Tensor, torch.Tensor] | None = None,
    autodiff: bool = False,
    validate: bool = True,
    return_log: bool = False,
    method: str = "log",
    compute_objective: bool = True,
) -> OTResult:
    r"""Entropic unbalanced optimal transport, solved by log-domain (or scaling-domain) Sinkhorn iterations.

    Solves (Chizat et al. 2018; Séjourné et al. 2019)

    .. math::
        \min_{T \ge 0} \langle C, T\rangle + \varepsilon\,\mathrm{KL}(T\,|\,c)
        + \rho_1 \mathrm{KL}(T\mathbf 1\,|\,a) + \rho_2 \mathrm{KL}(T^\top\mathbf 1\,|\,b)

    with :math:`\varepsilon` = ``reg`` and :math:`\rho` = ``reg_m`` (generalized KL; :math:`\rho=\infty` makes
    that marginal a hard constraint, so ``reg_m=inf`` is balanced Sinkhorn). The updates, on the potentials
    :math:`f = \varepsilon\log u`, :math:`g = \varepsilon\log v`, are

    .. math::
        f_i \leftarrow \tau_1\bigl(\varepsilon\log a_i - \varepsilon\,\mathrm{LSE}_j
            [(g_j - C_{ij})/\varepsilon + \log c_{ij}]\bigr),\quad
        g_j \leftarrow \tau_2\bigl(\varepsilon\log b_j - \varepsilon\,\mathrm{LSE}_i
            [(f_i - C_{ij})/\varepsilon + \log c_{ij}]\bigr),

    :math:`\tau = \rho/(\rho+\varepsilon)`, and :math:`T_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)\,c_{ij}`.
    Iterate for iterate this equals POT's ``ot.unbalanced.sinkhorn_unbalanced(a, b, C, reg, reg_m, c=c)``
    (POT >= 0.9.5) but never forms ``exp(-C/reg)``, so it stays exact where that kernel underflows
    (``reg`` = 0.01 on costs of order 10).

    Parameters
    ----------
    a
        Source masses, shape ``(..., n)``, non-negative; ``None`` for uniform ``1/n``.
    b
        Target masses, shape ``(..., m)``; ``None`` for uniform ``1/m``.
    C
        Cost matrix, shape ``(..., n, m)``; any leading batch dimensions (broadcast with those of ``a``,
        ``b``, ``c``). Its device and (floating) dtype are used for everything.
    reg
        Entropic regularization :math:`\varepsilon > 0`.
    reg_m
        Marginal relaxation :math:`\rho > 0`, or a pair ``(rho_rows, rho_cols)``; ``float("inf")`` (default)
        enforces the marginal exactly. Larger = more balanced.
    c
        Reference measure / prior plan of the entropic term, broadcastable to ``(..., n, m)``, non-negative
        (zeros forbid pairs). ``None`` (default) is ``a b^T`` like POT >= 0.9.5. ``c=1.0`` gives the
        ``KL(T|1)`` objective of POT's ``reg_type="entropy"`` (scBIOT spec §2.5). uniPort's proximal step
        passes the previous plan (uniPort spec §4.1). With both ``reg_m`` infinite the plan does not depend
        on a separable rescaling of ``c`` (``a b^T`` and ``1`` give the same plan).
    n_iter
        Maximum number of iterations.
    tol
        Stop when ``max(|Δf|, |Δg|) / reg`` (the change of ``log u``, ``log v``) over one iteration, checked
        every ``check_every`` iterations, is below ``tol``. ``tol=0`` runs exactly ``n_iter`` iterations.
        The criterion is that of the scBIOT reference (spec §2.5), not POT's relative change of ``u``.
    check_every
        Convergence is checked (one host sync) every ``check_every`` iterations and after the last one.
    warmstart
        Initial potentials ``(f, g)`` (e.g. from a previous :class:`OTResult`). As in POT, the first update
        recomputes ``f`` from ``g``, so only ``g`` changes the iterates.
    autodiff
        ``False`` (default): iterate without building an autograd graph; the plan is a constant and
        ``cost``/``objective`` are differentiable in ``C`` with gradient ``T`` (exact for the regularized
        objective at convergence, by the envelope theorem). ``True``: back-propagate through the unrolled
        iterations (memory grows with ``n_iter``).
    validate
        Check values (finite costs, non-negative masses, equal masses when balanced); costs one host sync.
        Shapes and scalars are always checked.
    return_log
        Also return ``log = {"err": [...], "log_plan": log T, "method": "log" | "scaling"}``.
    method
        ``"log"`` (default): the log-domain iterations above (two ``logsumexp`` over ``C`` per iteration),
        exact for any ``reg``. ``"scaling"``: the same iterates in the scaling domain,
        :math:`u \leftarrow (a / Kv)^{\tau_1}`, :math:`v \leftarrow (b / K^\top u)^{\tau_2}` with
        :math:`K = e^{-C/\varepsilon} c` (two mat-vecs per iteration, several times faster), correct only
        while nothing under/overflows in ``C``'s dtype. ``"auto"``: scaling when the kernel cannot
        under/overflow in the working dtype (every row and column of :math:`\log K` with mass has its maximum
        above ``log(tiny)/2``, no entry above ``log(max)/4``) and the scalings stay within
        ``[exp(-log(max)/4), exp(log(max)/4)]`` at every convergence check; otherwise (or when a check
        fails) the log domain. ``"auto"`` and ``"log"`` agree to round-off where both apply.
    compute_objective
        ``False`` skips the objective (``objective=None``); saves ~10 passes over ``C`` for callers that only
        need the plan (e.g. uniPort's 10 proximal solves per training step).

    Returns
    -------
    OTResult
        ``plan``, ``cost`` (``<C, T>`` per batch element), ``f``, ``g``, ``n_iter``, ``objective``,
        ``converged``, ``err``, ``log``.

    Raises
    ------
    ValueError
        Naming the argument: negative/NaN masses, shape mismatch, ``reg <= 0``, NaN/inf in ``C``, unequal
        total masses for the balanced problem.

    Notes
    -----
    Usual use in a training step (plan as a constant, loss differentiable in ``C``)::

        C = squared_euclidean_cost(z_query, z_ref.detach())
        res = sinkhorn_unbalanced(None, None, C.detach(), reg=0.1, reg_m=1.0)  # or under torch.no_grad()
        loss = ot_loss(C, res.plan)  # == (C * res.plan).sum((-2, -1))

    ``res.cost`` is the same quantity when ``C`` itself (with grad) was passed. Batching solves independent
    problems in one call; convergence is checked on the worst element, so ``n_iter`` is shared.

    References
    ----------
    Chizat, Peyré, Schmitzer, Vialard (2018), "Scaling algorithms for unbalanced optimal transport problems",
    Math. Comp. 87:2563-2609. Séjourné, Feydy, Vialard, Trouvé, Peyré (2019), "Sinkhorn divergences for
    unbalanced optimal transport", arXiv:1910.12958.

    Examples
    --------
    >>> import torch
    >>> from scvi_ext.ot import sinkhorn_unbalanced, squared_euclidean_cost
    >>> X, Y = torch.randn(5, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    >>> res = sinkhorn_unbalanced(None, None, squared_euclidean_cost(X, Y), reg=0.1, reg_m=1.0)
    >>> res.plan.shape, bool(res.converged)
    (torch.Size([5, 4]), True)
    """
    C = as_float_tensor(C, "C")
    if C.ndim < 2:
        raise ValueError(f"C must have shape (..., n, m) with at least 2 dimensions, got {tuple(C.shape)}.")
    n, m = C.shape[-2], C.shape[-1]
    if n == 0 or m == 0:
        raise ValueError(f"C must have at least one row and one column, got shape {tuple(C.shape)}.")
    reg = check_positive_scalar(reg, "reg")
    rho1, rho2 = _reg_m_pair(reg_m)
    if int(n_iter) != n_iter or n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}.")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {list(_METHODS)}, got {method!r}.")
    if int(check_every) != check_every or check_every < 1:
        raise ValueError(f"check_every must be a positive integer, got {check_every!r}.")
    try:
        tol = float(tol)
    except (TypeError, ValueError) as err:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}.") from err
    if not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}.")
    if validate:
        check_finite(C, "C")
    masses_given = a is not None or b is not None
    a = _marginal(a, "a", n, C, validate)
    b = _marginal(b, "b", m, C, validate)
    if c is not None:
        c = as_float_tensor(c, "c", like=C)
        try:
            if c.ndim and c.shape != C.shape:  # (fast paths: a scalar, or the same shape as C)
                torch.broadcast_shapes(c.shape, C.shape[-2:])
        except RuntimeError as err:
            raise ValueError(
                f"c must be broadcastable to (..., {n}, {m}) like C, got shape {tuple(c.shape)}."
            ) from err
        if validate:
            check_nonnegative(c, "c")
    shapes = [("C", C.shape[:-2]), ("a", a.shape[:-1]), ("b", b.shape[:-1])]
    if c is not None and c.ndim > 2:
        shapes.append(("c", c.shape[:-2]))
    batch = shapes[0][1] if all(s == shapes[0][1] for _, s in shapes) else broadcast_batch(shapes)
    if validate and math.isinf(rho1) and math.isinf(rho2):
        sa, sb = a.sum(-1), b.sum(-1)
        if bool(((sa - sb).abs() > _BALANCED_MASS_RTOL * torch.maximum(sa, sb)).any()):
            raise ValueError(
                f"a and b must have the same total mass for balanced OT (reg_m=inf), got "
                f"sum(a)={sa.flatten()[0].item():g} and sum(b)={sb.flatten()[0].item():g}; normalize them "
                "or use a finite reg_m."
            )

    tau1, tau2 = _tau(rho1, reg), _tau(rho2, reg)
    track = autodiff and torch.is_grad_enabled()
    with torch.set_grad_enabled(track):
        Cs = C if autodiff else C.detach()
        log_a, log_b = torch.log(a), torch.log(b)
        if c is None:
            log_K = -Cs / reg + log_a[..., :, None] + log_b[..., None, :]
        else:
            log_K = -Cs / reg + torch.log(c)
        log_K = log_K.expand(*batch, n, m)
        if warmstart is None:
            alpha = torch.zeros((*batch, n), dtype=C.dtype, device=C.device)
            beta = torch.zeros((*batch, m), dtype=C.dtype, device=C.device)
        else:
            if not isinstance(warmstart, tuple | list) or len(warmstart) != 2:
                raise ValueError("warmstart must be a pair (f, g) of potentials.")
            f0 = as_float_tensor(warmstart[0], "warmstart[0]", like=C)
            g0 = as_float_tensor(warmstart[1], "warmstart[1]", like=C)
            try:
                alpha, beta = f0.expand(*batch, n) / reg, g0.expand(*batch, m) / reg
            except RuntimeError as err:
                raise ValueError(
                    f"warmstart potentials must broadcast to {(*batch, n)} and {(*batch, m)}, "
                    f"got {tuple(f0.shape)} and {tuple(g0.shape)}."
                ) from err
        # An all -inf row of scores (nan/+inf update) needs -inf in the log-kernel (zero masses with the
        # default c, zeros of c, +inf costs); without any, skip the masking (faster).
        lo, hi, pot = _scaling_bounds(C.dtype)
        live_min = k_max = dead_rows = dead_cols = None
        if method != "log":
            live_min, k_max, dead_rows, dead_cols = _kernel_stats(log_K, log_a, log_b, masses_given)
        scaled = None
        if method == "scaling" or (method == "auto" and live_min >= lo and k_max <= hi):
            scaled = _scaling_iterations(
                a,
                b,
                log_K,
                alpha,
                beta,
                tau1,
                tau2,
                dead_rows,
                dead_cols,
                n_iter,
                check_every,
                tol,
                None if method == "scaling" else pot,
            )
        if scaled is not None:
            alpha, beta, it, converged, err, errors, plan = scaled
            log_plan = alpha[..., :, None] + log_K + beta[..., None, :] if return_log else None
        else:
            safe = bool(torch.isneginf(log_K).any())
            alpha, beta, it, converged, err, errors = _log_iterations(
                log_a, log_b, log_K, alpha, beta, tau1, tau2, safe, n_iter, check_every, tol
            )
            log_plan = alpha[..., :, None] + log_K + beta[..., None, :]
            plan = torch.exp(log_plan)
        f, g = reg * alpha, reg * beta

    cost = (C * (plan if track else plan.detach())).sum((-2, -1))  # == ot_loss(C, plan), without its checks
    used = "scaling" if scaled is not None else "log"
    log = {"err": errors, "log_plan": log_plan, "method": used} if return_log else None
    if not compute_objective:
        return OTResult(plan, cost, f, g, it, None, converged, err, log)
    # Objective; log(T / c) = (f + g - C) / reg, written without log(c) so that c = 0 entries are exact.
    T = plan if track else plan.detach()
    # Cs is detached unless autodiff, so the objective's gradient in C is T (envelope theorem).
    log_ratio = alpha[..., :, None] + beta[..., None, :] - Cs / reg
    log_ratio = torch.where(T > 0, log_ratio, torch.zeros_like(log_ratio))  # 0 log 0 = 0
    ent = (T * log_ratio).sum((-2, -1)) - T.sum((-2, -1))
    mass_c = a.sum(-1) * b.sum(-1) if c is None else c.expand(*batch, n, m).sum((-2, -1))
    objective = cost + reg * (ent + mass_c)
    if not math.isinf(rho1):
        objective = objective + rho1 * _gen_kl(T.sum(-1), a, (-1,))
    if not math.isinf(rho2):
        objective = objective + rho2 * _gen_kl(T.sum(-2), b, (-1,))
    return OTResult(plan, cost, f, g, it, objective, converged, err, log)


def sinkhorn(a, b, C, reg: float, **kwargs) -> OTResult:
    r"""Balanced entropic OT (``reg_m = inf``): :func:`sinkhorn_unbalanced` with hard marginals.

    Parameters
    ----------
    a
        Source masses ``(..., n)`` or ``None`` (uniform).
    b
        Target masses ``(..., m)`` or ``None`` (uniform); same total mass as ``a``.
    C
        Costs ``(..., n, m)``.
    reg
        Entropic regularization > 0.
    **kwargs
        Keyword arguments of :func:`sinkhorn_unbalanced` (``c``, ``n_iter``, ``tol``, ...), except ``reg_m``.

    Returns
    -------
    OTResult
        Plan with row sums ``a`` and column sums ``b`` (to ``tol``), cost, potentials.

    Examples
    --------
    >>> import torch
    >>> res = sinkhorn(None, None, torch.rand(4, 3, dtype=torch.float64), reg=0.05, tol=1e-9)
    >>> torch.allclose(res.plan.sum(0), torch.full((3,), 1 / 3, dtype=torch.float64))
    True
    """
    if "reg_m" in kwargs:
        raise TypeError("sinkhorn() is balanced (reg_m=inf); call sinkhorn_unbalanced() to set reg_m.")
    return sinkhorn_unbalanced(a, b, C, reg, _INF, **kwargs)


def ot_loss(C: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """Transport loss ``<C, T>`` with the plan held constant (gradient flows into ``C`` only).

    This is the idiom of minibatch-OT losses (uniPort, scBIOT): solve for ``T`` without gradient, then
    back-propagate ``sum_ij C_ij T_ij``. Its gradient in ``C`` is ``T``, which equals the gradient of the
    optimal regularized objective (envelope theorem).

    Parameters
    ----------
    C
        Costs ``(..., n, m)``, typically with grad.
    plan
        Plan broadcastable to ``C`` (detached here).

    Returns
    -------
    torch.Tensor
        ``(C * plan.detach()).sum((-2, -1))``, shape ``(...)``.

    Examples
    --------
    >>> import torch
    >>> C = torch.rand(3, 2, requires_grad=True)
    >>> T = torch.full((3, 2), 1 / 6)
    >>> ot_loss(C, T).backward()
    >>> torch.allclose(C.grad, T)
    True
    """
    if not isinstance(C, torch.Tensor) or not isinstance(plan, torch.Tensor):
        raise ValueError("C and plan must be torch tensors.")
    if C.ndim < 2:
        raise ValueError(f"C must have shape (..., n, m), got {tuple(C.shape)}.")
    try:
        torch.broadcast_shapes(C.shape, plan.shape)
    except RuntimeError as err:
        raise ValueError(
            f"plan of shape {tuple(plan.shape)} does not broadcast with C of shape {tuple(C.shape)}."
        ) from err
    return (C * plan.detach().to(C.dtype)).sum((-2, -1))
