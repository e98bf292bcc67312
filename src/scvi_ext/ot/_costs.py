"""Ground costs for the OT solvers (batched, differentiable)."""

from __future__ import annotations

import torch

from ._checks import as_float_tensor, check_nonnegative


def _check_points(X: torch.Tensor, name: str) -> None:
    if X.ndim < 2:
        raise ValueError(f"{name} must have shape (..., n_points, n_dims), got {tuple(X.shape)}.")


def squared_euclidean_cost(X, Y) -> torch.Tensor:
    """Pairwise squared Euclidean distances ``C_ij = ||x_i - y_j||^2``, clamped at 0.

    Computed as ``|x|^2 + |y|^2 - 2 x.y`` after centring both sets on the (detached) mean of ``Y``, which
    keeps the cancellation error small; round-off negatives are clamped to 0. Differentiable in both
    arguments (no square root, so no NaN gradient at coincident points).

    Parameters
    ----------
    X
        Points ``(..., n, d)``.
    Y
        Points ``(..., m, d)``; leading dimensions broadcast with ``X``'s.

    Returns
    -------
    torch.Tensor
        Costs ``(..., n, m)``, on ``X``'s device and dtype.

    Examples
    --------
    >>> import torch
    >>> squared_euclidean_cost(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    tensor([[25.,  1.]])
    """
    X = as_float_tensor(X, "X")
    Y = as_float_tensor(Y, "Y", like=X)
    _check_points(X, "X")
    _check_points(Y, "Y")
    if X.shape[-1] != Y.shape[-1]:
        raise ValueError(
            f"X and Y must have the same number of dimensions (last axis), got {X.shape[-1]} and {Y.shape[-1]}."
        )
    shift = Y.detach().mean(-2, keepdim=True)
    Xc, Yc = X - shift, Y - shift
    sq = (Xc * Xc).sum(-1)[..., :, None] + (Yc * Yc).sum(-1)[..., None, :]
    return (sq - 2.0 * Xc @ Yc.transpose(-1, -2)).clamp_min(0.0)


def gaussian_w2_cost(mu_x, sigma_x, mu_y, sigma_y, *, validate: bool = True) -> torch.Tensor:
    r"""Squared 2-Wasserstein distance between diagonal Gaussians (uniPort's OT cost).

    :math:`W_2^2(\mathcal N(\mu_i, \mathrm{diag}\,\sigma_i^2), \mathcal N(\mu_j, \mathrm{diag}\,\sigma_j^2))
    = \|\mu_i - \mu_j\|^2 + \|\sigma_i - \sigma_j\|^2` with :math:`\sigma` the standard deviations (not
    variances). uniPort (spec §4) adds ``1e-6`` and detaches the reference side; do that at the call site.

    Parameters
    ----------
    mu_x, sigma_x
        Means and standard deviations of the source Gaussians, ``(..., n, d)`` each.
    mu_y, sigma_y
        Means and standard deviations of the target Gaussians, ``(..., m, d)`` each.
    validate
        Check that the standard deviations are non-negative (one host sync).

    Returns
    -------
    torch.Tensor
        Costs ``(..., n, m)``.

    Examples
    --------
    >>> import torch
    >>> mu_x, s_x = torch.zeros(1, 2), torch.ones(1, 2)
    >>> mu_y, s_y = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 1.0]])
    >>> gaussian_w2_cost(mu_x, s_x, mu_y, s_y)
    tensor([[2.]])
    """
    mu_x = as_float_tensor(mu_x, "mu_x")
    sigma_x = as_float_tensor(sigma_x, "sigma_x", like=mu_x)
    mu_y = as_float_tensor(mu_y, "mu_y", like=mu_x)
    sigma_y = as_float_tensor(sigma_y, "sigma_y", like=mu_x)
    if sigma_x.shape != mu_x.shape:
        raise ValueError(
            f"sigma_x must have the shape of mu_x {tuple(mu_x.shape)}, got {tuple(sigma_x.shape)}."
        )
    if sigma_y.shape != mu_y.shape:
        raise ValueError(
            f"sigma_y must have the shape of mu_y {tuple(mu_y.shape)}, got {tuple(sigma_y.shape)}."
        )
    if validate:
        check_nonnegative(sigma_x, "sigma_x")
        check_nonnegative(sigma_y, "sigma_y")
    return squared_euclidean_cost(mu_x, mu_y) + squared_euclidean_cost(sigma_x, sigma_y)
