"""Barycentric projection of a transport plan."""

from __future__ import annotations

import torch

from ._checks import as_float_tensor


def barycentric_projection(plan, Y, eps: float = 1e-12, *, X=None) -> torch.Tensor:
    r"""Map each source point to the plan-weighted mean of the target points.

    :math:`\tilde x_i = \sum_j T_{ij} y_j / \sum_j T_{ij}` (scBIOT Eq. 5; uniPort's OT-space projection).

    A row whose mass :math:`\sum_j T_{ij}` is ``<= eps`` has no defined image. It is mapped to the source
    point ``X[i]`` when ``X`` is given (the point stays where it is), otherwise to the unweighted mean of
    ``Y`` — never to the origin (the scBIOT reference does that for rows whose kernel underflowed, spec §2.5).

    Parameters
    ----------
    plan
        Transport plan ``(..., n, m)``, non-negative.
    Y
        Target points ``(..., m, d)``.
    eps
        Row-mass threshold below which a row counts as empty (must be >= 0).
    X
        Optional source points ``(..., n, d)`` used for empty rows.

    Returns
    -------
    torch.Tensor
        Projected points ``(..., n, d)``. Differentiable in ``plan``, ``Y`` and ``X``.

    Examples
    --------
    >>> import torch
    >>> T = torch.tensor([[0.25, 0.25], [0.0, 0.0]])
    >>> Y = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    >>> barycentric_projection(T, Y)
    tensor([[1., 2.],
            [1., 2.]])
    >>> barycentric_projection(T, Y, X=torch.tensor([[9.0, 9.0], [7.0, 7.0]]))
    tensor([[1., 2.],
            [7., 7.]])
    """
    plan = as_float_tensor(plan, "plan")
    Y = as_float_tensor(Y, "Y", like=plan)
    if plan.ndim < 2:
        raise ValueError(f"plan must have shape (..., n, m), got {tuple(plan.shape)}.")
    if Y.ndim < 2 or Y.shape[-2] != plan.shape[-1]:
        raise ValueError(
            f"Y must have shape (..., m, d) with m = {plan.shape[-1]} (plan's columns), got {tuple(Y.shape)}."
        )
    if not float(eps) >= 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}.")
    mass = plan.sum(-1, keepdim=True)
    empty = mass <= eps
    proj = (plan @ Y) / torch.where(empty, torch.ones_like(mass), mass)
    if X is not None:
        X = as_float_tensor(X, "X", like=plan)
        if X.shape[-2:] != (plan.shape[-2], Y.shape[-1]):
            raise ValueError(
                f"X must have shape (..., {plan.shape[-2]}, {Y.shape[-1]}) (plan's rows x Y's dimensions), "
                f"got {tuple(X.shape)}."
            )
        fallback = X
    else:
        fallback = Y.mean(-2, keepdim=True)
    return torch.where(empty, fallback, proj)
