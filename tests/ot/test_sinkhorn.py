"""Log-domain (unbalanced) Sinkhorn against POT and a plain NumPy scaling reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot  # POT (ruff sorts it as first-party because tests/ot/ exists)
import pytest
import torch

from scvi_ext.ot import OTResult, ot_loss, sinkhorn, sinkhorn_unbalanced

F64 = torch.float64
TIGHT = {"n_iter": 100_000, "tol": 1e-12}
POT_TIGHT = {"numItermax": 100_000, "stopThr": 1e-15}


def _problem(seed: int, n: int, m: int, scale: float = 2.0):
    rng = np.random.default_rng(seed)
    a = rng.random(n) + 0.1
    b = rng.random(m) + 0.1
    a /= a.sum()
    b /= b.sum()
    M = rng.random((n, m)) * scale
    c = rng.random((n, m)) + 0.05
    return a, b, M, c


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=F64)


def _plain_scaling(a, b, M, reg, reg_m, c=None, n_iter=1000):
    """Obviously-correct plain-domain generalized Sinkhorn (Chizat et al. 2018, Alg. 1), NumPy float64."""
    K = np.exp(-M / reg) * (np.outer(a, b) if c is None else c)
    tau = 1.0 if math.isinf(reg_m) else reg_m / (reg_m + reg)
    u, v = np.ones_like(a), np.ones_like(b)
    with np.errstate(all="ignore"):
        for _ in range(n_iter):
            u = (a / (K @ v)) ** tau
            v = (b / (K.T @ u)) ** tau
    return u[:, None] * K * v[None, :]


def _gen_kl(p, q):
    p, q = np.asarray(p), np.asarray(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(np.where(p > 0, p * np.log(p / q), 0.0) - p + q))


def _small_eps_problem(seed: int = 0):
    """Costs of order 10 (0.2 .. 49) and eps = 0.01: exp(-C / eps) underflows or overflows the scalings."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(12, 2))
    Y = rng.normal(size=(10, 2)) + np.array([1.5, 0.0])
    M = ((X[:, None] - Y[None]) ** 2).sum(-1)
    M = 10 * M / M.mean()
    return np.full(12, 1 / 12), np.full(10, 1 / 10), M, 0.01


# --------------------------------------------------------------------------------------- agreement with POT
@pytest.mark.parametrize("with_c", [False, True])
@pytest.mark.parametrize(("reg", "reg_m"), [(0.1, 1.0), (0.05, 0.3), (0.5, 10.0), (1.0, 0.05)])
@pytest.mark.parametrize(("n", "m"), [(7, 5), (4, 9)])
def test_unbalanced_matches_pot(with_c, reg, reg_m, n, m):
    a, b, M, c = _problem(int(reg * 100 + reg_m * 10 + n), n, m)
    c_arg = c if with_c else None
    P, log = ot.unbalanced.sinkhorn_unbalanced(
        a, b, M, reg, reg_m, c=c_arg, method="sinkhorn", log=True, **POT_TIGHT
    )
    res = sinkhorn_unbalanced(_t(a), _t(b), _t(M), reg, reg_m, c=None if c_arg is None else _t(c), **TIGHT)
    assert isinstance(res, OTResult) and res.converged
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-10, rtol=1e-7)  # in fact to round-off
    # Potentials are POT's reg * log(u), reg * log(v).
    np.testing.assert_allclose(res.f.numpy(), reg * log["logu"], atol=1e-7)
    np.testing.assert_allclose(res.g.numpy(), reg * log["logv"], atol=1e-7)
    np.testing.assert_allclose(float(res.cost), float((P * M).sum()), rtol=1e-8)
    # Full objective with generalized KL terms, computed by hand from POT's plan.
    ref_c = np.outer(a, b) if c_arg is None else c
    obj = (
        (P * M).sum() + reg * _gen_kl(P, ref_c) + reg_m * _gen_kl(P.sum(1), a) + reg_m * _gen_kl(P.sum(0), b)
    )
    np.testing.assert_allclose(float(res.objective), obj, rtol=1e-8)


@pytest.mark.parametrize("with_c", [False, True])
def test_unbalanced_matches_pot_stabilized(with_c):
    a, b, M, c = _problem(3, 8, 6)
    c_arg = c if with_c else None
    P = ot.unbalanced.sinkhorn_unbalanced(
        a, b, M, 0.05, 0.5, c=c_arg, method="sinkhorn_stabilized", numItermax=20_000, stopThr=1e-13
    )
    res = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.05, 0.5, c=None if c_arg is None else _t(c), **TIGHT)
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("n", "m", "reg"), [(6, 6, 0.1), (5, 8, 0.05), (9, 4, 0.5)])
def test_balanced_matches_pot(n, m, reg):
    a, b, M, _ = _problem(n * m, n, m)
    P = ot.sinkhorn(a, b, M, reg, **POT_TIGHT)
    res = sinkhorn(_t(a), _t(b), _t(M), reg, **TIGHT)
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-10)
    np.testing.assert_allclose(float(res.cost), float((P * M).sum()), rtol=1e-8)


def test_fixed_iterations_match_pot_iterate_for_iterate():
    """tol=0 runs exactly n_iter iterations, each the same update as POT's scaling step."""
    a, b, M, c = _problem(11, 6, 7)
    P = ot.unbalanced.sinkhorn_unbalanced(a, b, M, 0.1, 1.0, c=c, numItermax=10, stopThr=0.0)
    res = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.1, 1.0, c=_t(c), n_iter=10, tol=0.0)
    assert res.n_iter == 10 and not res.converged
    np.testing.assert_allclose(res.plan.numpy(), P, rtol=1e-10, atol=1e-14)


def test_uniport_proximal_chain_matches_pot():
    """uniPort §4.1: 10 proximal steps, each a 10-iteration UOT with the previous plan as reference `c`."""
    rng = np.random.default_rng(5)
    zq, zr = rng.normal(size=(9, 3)), rng.normal(size=(11, 3)) + 0.5
    C = ((zq[:, None] - zr[None]) ** 2).sum(-1) + 1e-6
    Ch = C / C.max()
    a, b = np.full(9, 1 / 9), np.full(11, 1 / 11)
    T_pot = np.full((9, 11), 1 / 99)
    T_ours = torch.full((9, 11), 1 / 99, dtype=F64)
    for _ in range(10):
        T_pot = ot.unbalanced.sinkhorn_unbalanced(a, b, Ch, 0.1, 1.0, c=T_pot, numItermax=10, stopThr=0.0)
        T_ours = sinkhorn_unbalanced(_t(a), _t(b), _t(Ch), 0.1, 1.0, c=T_ours, n_iter=10, tol=0.0).plan
    np.testing.assert_allclose(T_ours.numpy(), T_pot, rtol=1e-9, atol=1e-14)
    assert 0.5 < T_ours.sum() <= 1.0 + 1e-9  # unbalanced: mass may drop


def test_entropy_reference_measure_matches_pot_and_plain_domain():
    """c=1 is POT's reg_type='entropy' (scBIOT's objective); log-domain == plain domain when nothing underflows."""
    a, b, M, _ = _problem(2, 6, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # POT warns that c is overwritten by ones
        P = ot.unbalanced.sinkhorn_unbalanced(a, b, M, 0.1, 0.4, reg_type="entropy", **POT_TIGHT)
    res = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.1, 0.4, c=1.0, **TIGHT)
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-10)
    plain = _plain_scaling(a, b, M, 0.1, 0.4, c=np.ones_like(M), n_iter=5000)
    np.testing.assert_allclose(res.plan.numpy(), plain, atol=1e-10)
    # ... and differs from the default reference a b^T when unbalanced.
    res_ab = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.1, 0.4, **TIGHT)
    assert not torch.allclose(res.plan, res_ab.plan, atol=1e-4)


def test_balanced_plan_does_not_depend_on_separable_reference():
    a, b, M, _ = _problem(4, 5, 7)
    p1 = sinkhorn(_t(a), _t(b), _t(M), 0.1, **TIGHT).plan
    p2 = sinkhorn(_t(a), _t(b), _t(M), 0.1, c=1.0, **TIGHT).plan
    torch.testing.assert_close(p1, p2, atol=1e-10, rtol=0)


def test_one_sided_reg_m_pair_matches_pot():
    a, b, M, _ = _problem(8, 6, 5)
    P = ot.unbalanced.sinkhorn_unbalanced(a, b, M, 0.1, (0.5, float("inf")), **POT_TIGHT)
    res = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.1, (0.5, float("inf")), **TIGHT)
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-10)
    np.testing.assert_allclose(res.plan.sum(0).numpy(), b, atol=1e-10)  # hard column marginal


# ------------------------------------------------------------------------------------------ properties
def test_batched_equals_looped():
    rng = np.random.default_rng(1)
    B1, B2, n, m = 2, 3, 6, 5
    C = _t(rng.random((B1, B2, n, m)) * 3)
    a = _t(np.full(n, 1 / n))  # shared, broadcast over the batch
    b = _t(rng.random((B1, B2, m)) + 0.1)
    b = b / b.sum(-1, keepdim=True)
    c = _t(rng.random((B1, B2, n, m)) + 0.1)
    res = sinkhorn_unbalanced(a, b, C, 0.1, 0.7, c=c, tol=1e-11, n_iter=10_000)
    assert res.plan.shape == (B1, B2, n, m) and res.cost.shape == (B1, B2) and res.f.shape == (B1, B2, n)
    for i in range(B1):
        for j in range(B2):
            one = sinkhorn_unbalanced(a, b[i, j], C[i, j], 0.1, 0.7, c=c[i, j], tol=1e-11, n_iter=10_000)
            torch.testing.assert_close(res.plan[i, j], one.plan, atol=1e-9, rtol=0)
            torch.testing.assert_close(res.cost[i, j], one.cost, atol=1e-9, rtol=0)
            torch.testing.assert_close(res.objective[i, j], one.objective, atol=1e-9, rtol=0)


def test_batched_balanced_default_uniform_masses():
    C = torch.rand(4, 6, 3, dtype=F64)
    res = sinkhorn(None, None, C, 0.1, tol=1e-10, n_iter=10_000)
    torch.testing.assert_close(res.plan.sum(-1), torch.full((4, 6), 1 / 6, dtype=F64), atol=1e-9, rtol=0)
    torch.testing.assert_close(res.plan.sum(-2), torch.full((4, 3), 1 / 3, dtype=F64), atol=1e-9, rtol=0)


@pytest.mark.parametrize("reg", [1.0, 0.1, 0.02])
def test_balanced_marginals_are_met(reg):
    a, b, M, _ = _problem(9, 8, 11)
    res = sinkhorn(_t(a), _t(b), _t(M), reg, tol=1e-10, n_iter=50_000)
    assert res.converged
    np.testing.assert_allclose(res.plan.sum(1).numpy(), a, atol=1e-8)
    np.testing.assert_allclose(res.plan.sum(0).numpy(), b, atol=1e-12)  # g-update is the last one


def test_large_reg_m_recovers_balanced():
    a, b, M, _ = _problem(6, 7, 6)
    bal = sinkhorn(_t(a), _t(b), _t(M), 0.1, **TIGHT).plan
    errs = []
    for reg_m in (1e2, 1e4, 1e8):
        # (with tau ~ 1 the potentials' common shift decays like tau^k: cap the iterations)
        unb = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.1, reg_m, n_iter=3000, tol=1e-10).plan
        errs.append(float((unb - bal).abs().max()))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-7


def test_unbalanced_optimality_conditions():
    """At the fixed point f = -reg_m log(T1 / a) and g = -reg_m log(T'1 / b)."""
    a, b, M, c = _problem(12, 7, 9)
    res = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.2, 0.6, c=_t(c), **TIGHT)
    torch.testing.assert_close(res.f, -0.6 * torch.log(res.plan.sum(1) / _t(a)), atol=1e-9, rtol=0)
    torch.testing.assert_close(res.g, -0.6 * torch.log(res.plan.sum(0) / _t(b)), atol=1e-9, rtol=0)


def test_small_eps_plain_scaling_fails_log_domain_is_exact():
    """eps = 0.01 on costs of order 10: plain scaling gives NaN / zero rows, the log-domain solver does not."""
    a, b, M, reg = _small_eps_problem()
    assert np.exp(-M / reg).min() == 0.0  # the kernel itself underflows
    # Plain NumPy reference: the scalings overflow, NaN appears, balanced and unbalanced alike.
    assert np.isnan(_plain_scaling(a, b, M, reg, float("inf"))).any()
    assert np.isnan(_plain_scaling(a, b, M, reg, 1.0)).any()
    # POT's plain solver stops at iteration 0 with a warning and returns a plan whose rows are (near) zero.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P_pot = ot.unbalanced.sinkhorn_unbalanced(a, b, M, reg, 1.0, method="sinkhorn")
    assert (P_pot.sum(1) == 0).any() or not np.isfinite(P_pot).all()

    bal = sinkhorn(_t(a), _t(b), _t(M), reg, n_iter=20_000, tol=1e-9, return_log=True)
    assert bal.converged and torch.isfinite(bal.plan).all()
    np.testing.assert_allclose(bal.plan.sum(1).numpy(), a, atol=1e-8)
    np.testing.assert_allclose(bal.plan.sum(0).numpy(), b, atol=1e-12)
    assert torch.isfinite(bal.log["log_plan"]).all()
    torch.testing.assert_close(torch.exp(bal.log["log_plan"]), bal.plan)

    unb = sinkhorn_unbalanced(_t(a), _t(b), _t(M), reg, 1.0, n_iter=20_000, tol=1e-10)
    assert unb.converged and torch.isfinite(unb.plan).all() and torch.isfinite(unb.f).all()
    rows, cols = unb.plan.sum(1), unb.plan.sum(0)
    assert (rows > 0).all() and (cols > 0).all()
    torch.testing.assert_close(unb.f, -1.0 * torch.log(rows / _t(a)), atol=1e-7, rtol=0)
    torch.testing.assert_close(unb.g, -1.0 * torch.log(cols / _t(b)), atol=1e-7, rtol=0)


def test_float32_matches_float64():
    a, b, M, c = _problem(13, 10, 8)
    ref = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.05, 0.5, c=_t(c), **TIGHT)
    f32 = torch.float32
    res = sinkhorn_unbalanced(
        torch.tensor(a, dtype=f32),
        torch.tensor(b, dtype=f32),
        torch.tensor(M, dtype=f32),
        0.05,
        0.5,
        c=torch.tensor(c, dtype=f32),
        tol=1e-5,
    )
    assert res.plan.dtype == f32 and res.cost.dtype == f32 and res.converged
    torch.testing.assert_close(res.plan.double(), ref.plan, atol=1e-5, rtol=0)
    # balanced small-eps problem in float32, marginals met to float32 accuracy
    a, b, M, reg = _small_eps_problem()
    bal = sinkhorn(torch.tensor(a, dtype=f32), None, torch.tensor(M, dtype=f32), reg, n_iter=20_000, tol=1e-5)
    assert torch.isfinite(bal.plan).all()
    torch.testing.assert_close(bal.plan.sum(1).double(), _t(a), atol=2e-5, rtol=0)


def test_zero_masses_and_forbidden_pairs_give_zero_not_nan():
    a, b, M, c = _problem(14, 5, 6)
    a[1] = 0.0
    a /= a.sum()
    c[3] = 0.0  # row 3 may not send mass anywhere
    c[:, 2] = 0.0  # column 2 may not receive
    # unbalanced (a balanced plan cannot exist with a forbidden row of positive mass)
    res = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.1, 0.5, c=_t(c), **TIGHT)
    assert torch.isfinite(res.plan).all() and torch.isfinite(res.cost) and torch.isfinite(res.objective)
    assert float(res.plan[1].abs().max()) == 0.0
    assert float(res.plan[3].abs().max()) == 0.0
    assert float(res.plan[:, 2].abs().max()) == 0.0
    # POT fails here (NaN at iteration 0); the problem separates, so compare with POT on the rest.
    rows, cols = np.array([0, 2, 4]), np.array([0, 1, 3, 4, 5])
    sub = np.ix_(rows, cols)
    P = ot.unbalanced.sinkhorn_unbalanced(a[rows], b[cols], M[sub], 0.1, 0.5, c=c[sub], **POT_TIGHT)
    np.testing.assert_allclose(res.plan.numpy()[sub], P, atol=1e-10)
    # default reference a b^T with a zero mass
    res = sinkhorn(_t(a), _t(b), _t(M), 0.1, **TIGHT)
    assert float(res.plan[1].abs().max()) == 0.0 and torch.isfinite(res.plan).all()
    np.testing.assert_allclose(res.plan.sum(0).numpy(), b, atol=1e-12)


def test_iteration_count_check_every_and_log():
    a, b, M, _ = _problem(15, 5, 5)
    res = sinkhorn_unbalanced(
        _t(a), _t(b), _t(M), 0.1, 1.0, n_iter=37, tol=0.0, check_every=10, return_log=True
    )
    assert res.n_iter == 37 and not res.converged
    assert len(res.log["err"]) == 4  # checks at 10, 20, 30 and the last iteration
    assert res.log["err"][-1] == res.err
    res = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.1, 1.0, tol=1e-8, check_every=7)
    assert res.converged and res.n_iter % 7 == 0 and res.err < 1e-8 and res.log is None


def test_warmstart_from_converged_potentials():
    a, b, M, _ = _problem(16, 6, 4)
    res = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.1, 1.0, **TIGHT)
    again = sinkhorn_unbalanced(
        _t(a), _t(b), _t(M), 0.1, 1.0, warmstart=(res.f, res.g), tol=1e-9, check_every=1
    )
    assert again.n_iter == 1 and again.converged
    torch.testing.assert_close(again.plan, res.plan, atol=1e-10, rtol=0)


# -------------------------------------------------------------------------------------------- gradients
def test_gradient_idiom_plan_constant_loss_differentiable_in_C():
    rng = np.random.default_rng(17)
    zq = torch.tensor(rng.normal(size=(5, 2)), requires_grad=True)
    zr = torch.tensor(rng.normal(size=(4, 2)))
    C = ((zq[:, None] - zr[None]) ** 2).sum(-1)
    res = sinkhorn_unbalanced(None, None, C, 0.1, 1.0)  # C with grad: the solver does not track it
    assert not res.plan.requires_grad and res.cost.requires_grad
    with torch.no_grad():
        res_ng = sinkhorn_unbalanced(None, None, C, 0.1, 1.0)
    assert not res_ng.cost.requires_grad
    torch.testing.assert_close(res.plan, res_ng.plan)
    loss = ot_loss(C, res_ng.plan)
    torch.testing.assert_close(loss, res.cost)
    (gC,) = torch.autograd.grad(loss, C, retain_graph=True)
    torch.testing.assert_close(gC, res.plan)
    (gz,) = torch.autograd.grad(loss, zq)
    manual = 2 * (res.plan[:, :, None] * (zq.detach()[:, None] - zr[None])).sum(1)
    torch.testing.assert_close(gz, manual)


def test_autodiff_objective_gradient_is_plan():
    """Envelope theorem: d(objective*)/dC = T*; unrolled autodiff agrees with the detached-plan idiom."""
    a, b, M, _ = _problem(18, 5, 4)
    C = _t(M).requires_grad_(True)
    res = sinkhorn_unbalanced(_t(a), _t(b), C, 0.5, 1.0, autodiff=True, tol=1e-12, n_iter=2000)
    assert res.plan.requires_grad
    (g_unrolled,) = torch.autograd.grad(res.objective, C)
    torch.testing.assert_close(g_unrolled, res.plan.detach(), atol=1e-8, rtol=0)
    res_const = sinkhorn_unbalanced(_t(a), _t(b), C, 0.5, 1.0, tol=1e-12, n_iter=2000)
    (g_const,) = torch.autograd.grad(res_const.objective, C)
    torch.testing.assert_close(g_const, res_const.plan, atol=1e-12, rtol=0)
    # finite-difference check of the optimal value's gradient on one entry
    h = 1e-6
    Mp = M.copy()
    Mp[2, 1] += h
    obj_p = float(sinkhorn_unbalanced(_t(a), _t(b), _t(Mp), 0.5, 1.0, tol=1e-13, n_iter=5000).objective)
    fd = (obj_p - res_const.objective.item()) / h
    assert abs(fd - float(res_const.plan[2, 1])) < 1e-5


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA not available (the CPU tests cover the logic)"
)
def test_cuda_matches_cpu():
    a, b, M, c = _problem(19, 9, 7)
    cpu = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.05, 0.5, c=_t(c), tol=1e-10)
    gpu = sinkhorn_unbalanced(_t(a), _t(b), _t(M).cuda(), 0.05, 0.5, c=_t(c), tol=1e-10)
    assert gpu.plan.is_cuda
    torch.testing.assert_close(gpu.plan.cpu(), cpu.plan, atol=1e-9, rtol=0)


# ------------------------------------------------------------------------------------------- bad input
_A, _B, _M, _C = _problem(20, 4, 3)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"a": -_A}, "a"),
        ({"b": np.r_[-0.1, 0.6, 0.5]}, "b"),
        ({"a": np.full(5, 0.2)}, "a"),
        ({"b": np.full(4, 0.25)}, "b"),
        ({"a": np.r_[np.nan, 0.5, 0.25, 0.25]}, "a"),
        ({"a": np.zeros(4)}, "a"),
        ({"C": np.ones(4)}, "C"),
        ({"C": np.ones((4, 0))}, "C"),
        ({"C": np.where(np.eye(4, 3) > 0, np.nan, _M)}, "C"),
        ({"C": np.where(np.eye(4, 3) > 0, np.inf, _M)}, "C"),
        ({"reg": 0.0}, "reg"),
        ({"reg": -1.0}, "reg"),
        ({"reg": float("nan")}, "reg"),
        ({"reg": float("inf")}, "reg"),
        ({"reg_m": 0.0}, "reg_m"),
        ({"reg_m": (1.0, -2.0)}, "reg_m"),
        ({"reg_m": (1.0, 2.0, 3.0)}, "reg_m"),
        ({"c": -np.ones((4, 3))}, "c"),
        ({"c": np.ones((3, 4))}, "c"),
        ({"n_iter": 0}, "n_iter"),
        ({"tol": -1.0}, "tol"),
        ({"check_every": 0}, "check_every"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(kwargs, name):
    args = {"a": _A, "b": _B, "C": _M, "reg": 0.1, "reg_m": 1.0}
    extra = {k: kwargs[k] for k in ("c", "n_iter", "tol", "check_every") if k in kwargs}
    args.update({k: v for k, v in kwargs.items() if k not in extra})
    conv = {k: (_t(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    extra = {k: (_t(v) if isinstance(v, np.ndarray) else v) for k, v in extra.items()}
    with pytest.raises(ValueError, match=name):
        sinkhorn_unbalanced(conv["a"], conv["b"], conv["C"], conv["reg"], conv["reg_m"], **extra)


def test_balanced_with_unequal_masses_raises():
    with pytest.raises(ValueError, match="same total mass"):
        sinkhorn(_t(_A), _t(_B * 2), _t(_M), 0.1)
    sinkhorn_unbalanced(_t(_A), _t(_B * 2), _t(_M), 0.1, 1.0)  # fine when unbalanced


def test_batch_mismatch_and_sinkhorn_reg_m_raise():
    with pytest.raises(ValueError, match="batch"):
        sinkhorn_unbalanced(torch.full((2, 4), 0.25), None, torch.rand(3, 4, 3), 0.1, 1.0)
    with pytest.raises(TypeError, match="reg_m"):
        sinkhorn(None, None, torch.rand(3, 3), 0.1, reg_m=1.0)
    with pytest.raises(ValueError, match="plan"):
        ot_loss(torch.rand(3, 4), torch.rand(4, 3))
    with pytest.raises(ValueError, match="warmstart"):
        sinkhorn(None, None, torch.rand(3, 4), 0.1, warmstart=(torch.zeros(2), torch.zeros(4)))
