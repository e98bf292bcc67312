"""Scaling-domain fast path of ``sinkhorn_unbalanced`` (``method="scaling"|"auto"``) against POT and the log path."""

from __future__ import annotations

import warnings

import numpy as np
import ot  # POT (sorted as first-party because tests/ot/ exists)
import pytest
import torch

from scvi_ext.ot import sinkhorn, sinkhorn_unbalanced

F64 = torch.float64
F32 = torch.float32
TIGHT = {"n_iter": 100_000, "tol": 1e-12}
POT_TIGHT = {"numItermax": 100_000, "stopThr": 1e-15}


def _problem(seed: int, n: int, m: int, scale: float = 2.0):
    rng = np.random.default_rng(seed)
    a = rng.random(n) + 0.1
    b = rng.random(m) + 0.1
    return a / a.sum(), b / b.sum(), rng.random((n, m)) * scale, rng.random((n, m)) + 0.05


def _t(x, dtype=F64) -> torch.Tensor:
    return torch.as_tensor(x, dtype=dtype)


@pytest.mark.parametrize("method", ["scaling", "auto"])
@pytest.mark.parametrize("with_c", [False, True])
@pytest.mark.parametrize(("reg", "reg_m"), [(0.1, 1.0), (0.05, 0.3), (1.0, float("inf"))])
def test_scaling_matches_pot_and_log_path(method, with_c, reg, reg_m):
    a, b, M, c = _problem(int(reg * 100) + int(with_c), 7, 5)
    c_arg = c if with_c else None
    if np.isinf(reg_m):
        P = ot.sinkhorn(a, b, M, reg, **POT_TIGHT) if not with_c else None
    else:
        P = ot.unbalanced.sinkhorn_unbalanced(a, b, M, reg, reg_m, c=c_arg, **POT_TIGHT)
    kw = {"c": None if c_arg is None else _t(c_arg), "return_log": True, **TIGHT}
    fast = sinkhorn_unbalanced(_t(a), _t(b), _t(M), reg, reg_m, method=method, **kw)
    slow = sinkhorn_unbalanced(_t(a), _t(b), _t(M), reg, reg_m, **kw)
    assert fast.log["method"] == "scaling" and slow.log["method"] == "log"
    assert fast.converged
    if P is not None:
        np.testing.assert_allclose(fast.plan.numpy(), P, atol=1e-10, rtol=1e-7)
    torch.testing.assert_close(fast.plan, slow.plan, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(fast.f, slow.f, atol=1e-9, rtol=0)
    torch.testing.assert_close(fast.g, slow.g, atol=1e-9, rtol=0)
    torch.testing.assert_close(fast.objective, slow.objective, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(torch.exp(fast.log["log_plan"]), fast.plan, atol=1e-14, rtol=1e-9)


def test_fixed_iterations_scaling_is_pot_iterate_for_iterate():
    a, b, M, c = _problem(11, 6, 7)
    P = ot.unbalanced.sinkhorn_unbalanced(a, b, M, 0.1, 1.0, c=c, numItermax=10, stopThr=0.0)
    res = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.1, 1.0, c=_t(c), n_iter=10, tol=0.0, method="auto")
    assert res.n_iter == 10
    np.testing.assert_allclose(res.plan.numpy(), P, rtol=1e-10, atol=1e-14)


def test_uniport_proximal_chain_float32_auto_matches_pot_and_log():
    """uniPort §4.1 in float32 (10 proximal steps x 10 iterations): auto == log == POT (float64) to float32."""
    rng = np.random.default_rng(5)
    zq, zr = rng.normal(size=(40, 4)), rng.normal(size=(50, 4)) + 0.7
    C = ((zq[:, None] - zr[None]) ** 2).sum(-1) + 1e-6
    Ch = C / C.max()
    a, b = np.full(40, 1 / 40), np.full(50, 1 / 50)
    T_pot = np.full((40, 50), 1 / 2000)
    T_fast = T_log = torch.full((40, 50), 1 / 2000, dtype=F32)
    methods = set()
    for _ in range(10):
        T_pot = ot.unbalanced.sinkhorn_unbalanced(a, b, Ch, 0.1, 1.0, c=T_pot, numItermax=10, stopThr=0.0)
        r = sinkhorn_unbalanced(
            _t(a, F32),
            _t(b, F32),
            _t(Ch, F32),
            0.1,
            1.0,
            c=T_fast,
            n_iter=10,
            tol=0.0,
            method="auto",
            return_log=True,
        )
        methods.add(r.log["method"])
        T_fast = r.plan
        T_log = sinkhorn_unbalanced(
            _t(a, F32), _t(b, F32), _t(Ch, F32), 0.1, 1.0, c=T_log, n_iter=10, tol=0.0
        ).plan
    assert methods == {"scaling"}  # uniPort's kernel never gets near float32 underflow
    scale = float(T_pot.max())
    np.testing.assert_allclose(T_fast.double().numpy(), T_pot, atol=1e-4 * scale, rtol=0)
    torch.testing.assert_close(T_fast, T_log, atol=1e-5 * scale, rtol=0)


def test_auto_falls_back_to_log_when_the_kernel_underflows():
    """eps = 0.01 on costs of order 10: exp(-C/eps) underflows, so auto uses the log domain (same plan)."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(12, 2)), rng.normal(size=(10, 2)) + np.array([1.5, 0.0])
    M = ((X[:, None] - Y[None]) ** 2).sum(-1)
    M = 10 * M / M.mean()
    for dtype in (F64, F32):
        kw = {"n_iter": 100, "tol": 0.0}
        auto = sinkhorn_unbalanced(None, None, _t(M, dtype), 0.01, 1.0, method="auto", return_log=True, **kw)
        log = sinkhorn_unbalanced(None, None, _t(M, dtype), 0.01, 1.0, **kw)
        assert auto.log["method"] == "log"
        torch.testing.assert_close(auto.plan, log.plan, atol=0, rtol=0)
        assert torch.isfinite(auto.plan).all()
    # forcing the scaling domain there breaks (this is why auto exists)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        forced = sinkhorn_unbalanced(None, None, _t(M, F32), 0.01, 1.0, method="scaling", n_iter=50)
    assert not torch.isfinite(forced.plan).all() or (forced.plan.sum(1) == 0).any()


def test_auto_falls_back_when_the_scalings_leave_the_safe_range():
    """Kernel fine, but a mass of 1e-12 needs u ~ 1e-12 (|log u| > log(max)/4 in float32): rerun in log domain."""
    a, b, M, _ = _problem(21, 5, 4)
    a = a.copy()
    a[0] = 1e-12
    a32, b32, M32 = _t(a, F32), _t(b, F32), _t(M, F32)
    auto = sinkhorn_unbalanced(a32, b32, M32, 0.1, 1.0, c=1.0, method="auto", return_log=True)
    log = sinkhorn_unbalanced(a32, b32, M32, 0.1, 1.0, c=1.0)
    assert auto.log["method"] == "log"
    torch.testing.assert_close(auto.plan, log.plan, atol=0, rtol=0)
    # float64 has the range: scaling is kept and agrees
    auto64 = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.1, 1.0, c=1.0, method="auto", return_log=True)
    assert auto64.log["method"] == "scaling"
    log64 = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.1, 1.0, c=1.0)
    torch.testing.assert_close(auto64.plan, log64.plan, atol=1e-14, rtol=1e-8)
    # batched without autograd (the small-problem numpy iterations): the same fallback
    with torch.no_grad():
        auto_b = sinkhorn_unbalanced(
            a32[None], b32[None], M32[None], 0.1, 1.0, c=1.0, method="auto", return_log=True
        )
    assert auto_b.log["method"] == "log"
    torch.testing.assert_close(auto_b.plan[0], log.plan, atol=0, rtol=0)


def test_scaling_zero_masses_forbidden_pairs_and_batches():
    a, b, M, c = _problem(14, 5, 6)
    a[1] = 0.0
    a /= a.sum()
    c[3] = 0.0
    c[:, 2] = 0.0
    fast = sinkhorn_unbalanced(
        _t(a), _t(b), _t(M), 0.1, 0.5, c=_t(c), method="auto", return_log=True, **TIGHT
    )
    slow = sinkhorn_unbalanced(_t(a), _t(b), _t(M), 0.1, 0.5, c=_t(c), **TIGHT)
    assert fast.log["method"] == "scaling"
    assert torch.isfinite(fast.plan).all() and torch.isfinite(fast.objective)
    assert float(fast.plan[[1, 3]].abs().max()) == 0.0 and float(fast.plan[:, 2].abs().max()) == 0.0
    torch.testing.assert_close(fast.plan, slow.plan, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(fast.objective, slow.objective, atol=1e-12, rtol=1e-9)
    # batched (padding rows with zero mass, as uniPort's batched query blocks) == looped log path
    rng = np.random.default_rng(2)
    C = _t(rng.random((3, 6, 4)))
    aa = _t(np.array([[1 / 6] * 6, [1 / 4] * 4 + [0, 0], [1 / 5] * 5 + [0]]))
    cc = _t(rng.random((3, 6, 4)) + 0.1)
    res = sinkhorn_unbalanced(aa, None, C, 0.1, 1.0, c=cc, method="auto", n_iter=10, tol=0.0)
    for i in range(3):
        k = int((aa[i] > 0).sum())
        one = sinkhorn_unbalanced(aa[i, :k], None, C[i, :k], 0.1, 1.0, c=cc[i, :k], n_iter=10, tol=0.0)
        torch.testing.assert_close(res.plan[i, :k], one.plan, atol=1e-12, rtol=1e-9)
        assert float(res.plan[i, k:].abs().sum()) == 0.0


def test_scaling_balanced_marginals_and_autodiff():
    a, b, M, _ = _problem(9, 8, 11)
    res = sinkhorn(_t(a), _t(b), _t(M), 0.1, tol=1e-10, n_iter=50_000, method="auto")
    np.testing.assert_allclose(res.plan.sum(0).numpy(), b, atol=1e-12)
    np.testing.assert_allclose(res.plan.sum(1).numpy(), a, atol=1e-8)
    C = _t(M).requires_grad_(True)
    r = sinkhorn_unbalanced(
        _t(a), _t(b), C, 0.5, 1.0, autodiff=True, tol=1e-12, n_iter=2000, method="scaling"
    )
    (g,) = torch.autograd.grad(r.objective, C)
    torch.testing.assert_close(g, r.plan.detach(), atol=1e-8, rtol=0)


def test_bad_method_raises():
    with pytest.raises(ValueError, match="method"):
        sinkhorn_unbalanced(None, None, torch.rand(3, 2), 0.1, 1.0, method="fast")


@pytest.mark.parametrize("numpy_path", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_batched_scaling_buffers_match_plain_loop(padded, numpy_path, monkeypatch):
    """Without autograd, batched scaling solves run on preallocated torch buffers (same plan, bit for bit) or,
    for small CPU problems, in numpy (the same iterations; equal up to rounding)."""
    from scvi_ext.ot import _sinkhorn

    monkeypatch.setattr(_sinkhorn, "_NUMPY_MAX_ENTRIES", (1 << 16) if numpy_path else 0)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        S, n, m = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 6), (3, 40), (3, 40)))
        C = torch.rand(S, n, m, dtype=torch.float64, generator=g) * 3
        a = torch.full((S, n), 1.0 / n, dtype=torch.float64)
        if padded:
            a[:, n // 2 :] = 0.0  # padding of a batched call: dead rows, masked
        b = torch.full((S, m), 1.0 / m, dtype=torch.float64)
        kw = {
            "reg": 0.05,
            "reg_m": 0.4,
            "c": 1.0,
            "method": "auto",
            "compute_objective": False,
            "validate": False,
        }
        fast = sinkhorn_unbalanced(a, b, C, return_log=True, **kw)
        plain = sinkhorn_unbalanced(a, b, C, autodiff=True, return_log=True, **kw)  # grad on: the plain loop
        assert fast.log["method"] == "scaling"
        assert fast.n_iter == plain.n_iter
        if numpy_path:
            torch.testing.assert_close(fast.plan, plain.plan.detach(), rtol=1e-10, atol=1e-300)
            torch.testing.assert_close(fast.f, plain.f.detach(), rtol=1e-10, atol=1e-12)
            assert fast.plan.dtype == torch.float64 and not fast.plan.requires_grad
        else:
            assert torch.equal(fast.plan, plain.plan.detach())
