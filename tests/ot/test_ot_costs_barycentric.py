"""Ground costs and barycentric projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scvi_ext.ot import (
    barycentric_projection,
    gaussian_w2_cost,
    sinkhorn,
    sinkhorn_unbalanced,
    squared_euclidean_cost,
)

F64 = torch.float64


# ------------------------------------------------------------------------------------------------- costs
def test_squared_euclidean_cost_matches_brute_force_batched():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2, 5, 3)) + 100.0  # far from the origin: the centring keeps it accurate
    Y = rng.normal(size=(2, 4, 3)) + 100.0
    brute = np.array([[[np.sum((x - y) ** 2) for y in Yb] for x in Xb] for Xb, Yb in zip(X, Y, strict=True)])
    C = squared_euclidean_cost(torch.tensor(X), torch.tensor(Y))
    assert C.shape == (2, 5, 4) and C.dtype == F64
    np.testing.assert_allclose(C.numpy(), brute, rtol=1e-10, atol=1e-10)
    # broadcasting a shared target set, float32
    C32 = squared_euclidean_cost(
        torch.tensor(X, dtype=torch.float32), torch.tensor(Y[0], dtype=torch.float32)
    )
    assert C32.shape == (2, 5, 4) and C32.dtype == torch.float32
    np.testing.assert_allclose(C32[0].numpy(), brute[0], rtol=1e-4, atol=1e-3)


def test_squared_euclidean_cost_clamped_and_differentiable_at_zero():
    X = torch.tensor([[1e4, -3e4], [0.3, 0.1]], dtype=torch.float32, requires_grad=True)
    C = squared_euclidean_cost(X, X.detach())
    assert (C >= 0).all()
    assert torch.allclose(torch.diagonal(C), torch.zeros(2), atol=1e-2)
    C.sum().backward()
    assert torch.isfinite(X.grad).all()


def test_gaussian_w2_cost_against_hand_computation():
    mu_x = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=F64)
    sd_x = torch.tensor([[1.0, 1.0], [0.5, 2.0]], dtype=F64)
    mu_y = torch.tensor([[3.0, 4.0]], dtype=F64)
    sd_y = torch.tensor([[1.0, 3.0]], dtype=F64)
    C = gaussian_w2_cost(mu_x, sd_x, mu_y, sd_y)
    # ||mu - mu'||^2 + ||sd - sd'||^2
    expected = torch.tensor([[25.0 + 4.0], [(4.0 + 4.0) + (0.25 + 1.0)]], dtype=F64)
    torch.testing.assert_close(C, expected)


def test_gaussian_w2_cost_equals_closed_form_w2_for_diagonal_gaussians():
    """W2^2 = ||mu1-mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2); diagonal -> sum (s1 - s2)^2."""
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = rng.random(4) + 0.1, rng.random(4) + 0.1
    S1, S2 = np.diag(s1**2), np.diag(s2**2)
    r1 = np.sqrt(S1)
    w2 = np.sum((mu1 - mu2) ** 2) + np.trace(S1 + S2 - 2 * np.sqrt(r1 @ S2 @ r1))
    C = gaussian_w2_cost(
        torch.tensor(mu1[None]), torch.tensor(s1[None]), torch.tensor(mu2[None]), torch.tensor(s2[None])
    )
    np.testing.assert_allclose(float(C[0, 0]), w2, rtol=1e-10)


def test_cost_bad_input():
    with pytest.raises(ValueError, match="X and Y"):
        squared_euclidean_cost(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="X must"):
        squared_euclidean_cost(torch.zeros(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="sigma_x"):
        gaussian_w2_cost(torch.zeros(3, 2), -torch.ones(3, 2), torch.zeros(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="sigma_y"):
        gaussian_w2_cost(torch.zeros(3, 2), torch.ones(3, 2), torch.zeros(2, 2), torch.ones(2, 3))


# ----------------------------------------------------------------------------------- barycentric projection
def test_barycentric_projection_hand_computation():
    T = torch.tensor([[0.1, 0.3, 0.0], [0.2, 0.2, 0.2]], dtype=F64)
    Y = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 6.0]], dtype=F64)
    out = barycentric_projection(T, Y)
    # row 0: (0.1*[0,0] + 0.3*[4,0]) / 0.4 = [3, 0]; row 1: mean of Y = [4/3, 2]
    expected = torch.tensor([[3.0, 0.0], [4.0 / 3.0, 2.0]], dtype=F64)
    torch.testing.assert_close(out, expected)


def test_barycentric_projection_empty_rows_never_go_to_origin():
    T = torch.tensor([[0.5, 0.5], [0.0, 0.0], [1e-15, 0.0]], dtype=F64)
    Y = torch.tensor([[2.0, 2.0], [4.0, 6.0]], dtype=F64)
    X = torch.tensor([[9.0, 9.0], [-1.0, 5.0], [7.0, -7.0]], dtype=F64)
    # no X: rows without mass (<= eps) go to the mean of Y
    out = barycentric_projection(T, Y)
    torch.testing.assert_close(out[1], torch.tensor([3.0, 4.0], dtype=F64))
    torch.testing.assert_close(out[2], torch.tensor([3.0, 4.0], dtype=F64))
    assert (out.abs().sum(-1) > 0).all()
    # with X: they stay at their source point
    out = barycentric_projection(T, Y, X=X)
    torch.testing.assert_close(out[0], torch.tensor([3.0, 4.0], dtype=F64))
    torch.testing.assert_close(out[1:], X[1:])
    # eps=0: a tiny but positive row is still projected exactly
    out = barycentric_projection(T, Y, eps=0.0, X=X)
    torch.testing.assert_close(out[2], Y[0])
    torch.testing.assert_close(out[1], X[1])


def test_barycentric_projection_batched_and_gradient():
    rng = np.random.default_rng(2)
    T = torch.tensor(rng.random((3, 4, 5)), requires_grad=True)
    Y = torch.tensor(rng.normal(size=(3, 5, 2)), requires_grad=True)
    out = barycentric_projection(T, Y)
    assert out.shape == (3, 4, 2)
    for k in range(3):
        torch.testing.assert_close(out[k], barycentric_projection(T[k], Y[k]))
    out.sum().backward()
    assert torch.isfinite(T.grad).all() and torch.isfinite(Y.grad).all()


def test_barycentric_projection_of_small_eps_plan():
    """Underflow-prone regime (scBIOT §2.5): the log-domain plan projects every prototype inside the target hull."""
    rng = np.random.default_rng(3)
    P = torch.tensor(rng.normal(size=(8, 2)))
    R = torch.tensor(rng.normal(size=(6, 2))) + torch.tensor([6.0, 0.0])
    C = squared_euclidean_cost(P, R)  # entries ~ 20..70, eps 0.01: exp(-C/eps) == 0 everywhere
    assert float(torch.exp(-C / 0.01).max()) == 0.0
    for res in (
        sinkhorn(None, None, C, 0.01, n_iter=3000, tol=1e-6),
        sinkhorn_unbalanced(None, None, C, 0.01, 0.4, c=1.0, n_iter=3000, tol=1e-6),
    ):
        proj = barycentric_projection(res.plan, R)
        assert torch.isfinite(proj).all()
        assert (proj[:, 0] > R[:, 0].min() - 1e-9).all() and (proj[:, 0] < R[:, 0].max() + 1e-9).all()


def test_barycentric_bad_input():
    with pytest.raises(ValueError, match="Y must"):
        barycentric_projection(torch.ones(3, 4), torch.ones(3, 2))
    with pytest.raises(ValueError, match="X must"):
        barycentric_projection(torch.ones(3, 4), torch.ones(4, 2), X=torch.ones(3, 3))
    with pytest.raises(ValueError, match="plan must"):
        barycentric_projection(torch.ones(3), torch.ones(3, 2))
    with pytest.raises(ValueError, match="eps"):
        barycentric_projection(torch.ones(3, 4), torch.ones(4, 2), eps=-1.0)
