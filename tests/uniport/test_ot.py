"""uniPort's minibatch UOT solver, OT term and global plan store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scvi_ext.ot import gaussian_w2_cost
from scvi_ext.uniport import GlobalPlanStore, uot_minibatch
from scvi_ext.uniport._ot import _proximal_scaling, cumulative_within_index


def _reference_loop(C, T0, reg=0.1, reg_m=1.0, n_outer=10, n_inner=10):
    """float64 NumPy transcription of the reference solver (spec §4.1), the slow obvious version."""
    n, m = C.shape
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    kappa = reg_m / (reg_m + reg)
    u = np.full(n, 1 / n)
    T = T0.copy()
    for _ in range(n_outer):
        K = np.exp(-C / (reg * np.abs(C).max())) * T
        v = b / (K.T @ u)
        for _ in range(n_inner):
            u = (a / (K @ v)) ** kappa
            v = (b / (K.T @ u)) ** kappa
        T = u[:, None] * K * v[None, :]
    return T


@pytest.mark.parametrize("shape", [(7, 5), (17, 23)])
def test_one_proximal_step_matches_pot(shape):
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(1)
    C = rng.random(shape) * 5
    n, m = shape
    T_prev = rng.random(shape) + 0.1
    T_prev /= T_prev.sum()
    ours = uot_minibatch(torch.tensor(C), torch.tensor(T_prev), n_outer=1, n_inner=1000).numpy()
    pot = ot.unbalanced.sinkhorn_unbalanced(
        np.full(n, 1 / n),
        np.full(m, 1 / m),
        C / C.max(),
        reg=0.1,
        reg_m=1.0,
        c=T_prev,
        numItermax=3000,
        stopThr=1e-12,
    )
    np.testing.assert_allclose(ours, pot, rtol=1e-5, atol=1e-9 * pot.max())


def test_proximal_solver_close_to_pot_chain_and_reference_loop():
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(2)
    C = rng.random((37, 53)) * 3
    n, m = C.shape
    T0 = np.full((n, m), 1 / (n * m))
    ours = uot_minibatch(torch.tensor(C)).numpy()
    T = T0
    for _ in range(10):
        T = ot.unbalanced.sinkhorn_unbalanced(
            np.full(n, 1 / n),
            np.full(m, 1 / m),
            C / C.max(),
            reg=0.1,
            reg_m=1.0,
            c=T,
            numItermax=10,
            stopThr=0,
        )
    ref = _reference_loop(C, T0)
    assert np.abs(ours - T).max() <= 0.03 * T.max()
    assert np.abs(ours - ref).max() <= 0.03 * ref.max()
    # unbalanced: mass close to (not above) 1
    assert 0.8 < ours.sum() <= 1.0 + 1e-6


def test_prior_changes_plan_and_nan_gives_uniform():
    C = torch.rand(6, 4)
    labels_q, labels_r = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2, 0])
    prior = torch.where(labels_q[:, None] == labels_r[None, :], 0.5, 2.0)
    T = uot_minibatch(C, prior=prior)
    T_plain = uot_minibatch(C)
    same = (labels_q[:, None] == labels_r[None, :]).float()
    assert (T * same).sum() > (T_plain * same).sum()
    bad = uot_minibatch(torch.full((3, 2), float("nan")))
    torch.testing.assert_close(bad, torch.full((3, 2), 1 / 6))


def test_ot_term_small_for_same_cells_large_for_shifted():
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(400, 16, generator=gen)
    sd = torch.rand(400, 16, generator=gen) * 0.5 + 0.5
    perm = torch.randperm(400, generator=gen)
    a, b = perm[:128], perm[128:256]

    def term(mq, sq, mr, sr):
        C = gaussian_w2_cost(mq, sq, mr, sr) + 1e-6
        return float((C * uot_minibatch(C)).sum())

    same = term(mu[a], sd[a], mu[b], sd[b])
    shifted = term(mu[a] + 3.0, sd[a], mu[b], sd[b])
    assert shifted > 2.5 * same


def test_plan_store_gather_scatter_unsorted_rows_and_memmap(tmp_path):
    codes = np.array([1, 0, 1, 1, 0, 1])  # unsorted sources; 0 = query, 1 = reference
    within = cumulative_within_index(codes)
    assert within.tolist() == [0, 0, 1, 2, 1, 3]
    for max_bytes in (10**9, 0):  # RAM and disk-backed
        store = GlobalPlanStore({0: (2, 4)}, max_dense_bytes=max_bytes, directory=str(tmp_path))
        assert isinstance(store.plans[0], np.memmap) == (max_bytes == 0)
        np.testing.assert_allclose(np.asarray(store.plans[0]), 1 / 8)
        rows, cols = within[[4]], within[[5, 0]]
        store.scatter(0, rows, cols, torch.tensor([[0.3, 0.7]]))
        assert store.plans[0][1, 3] == pytest.approx(0.3) and store.plans[0][1, 0] == pytest.approx(0.7)
        torch.testing.assert_close(store.gather(0, rows, cols), torch.tensor([[0.3, 0.7]]))


def test_fast_proximal_path_matches_checked_solver_and_falls_back():
    """``method="auto"`` (one host sync per minibatch) gives the plan of the per-solve checked scaling path."""
    gen = torch.Generator().manual_seed(3)
    C = torch.rand(40, 30, generator=gen) * 4
    fast = _proximal_scaling(C / C.max(), torch.full((40, 30), 1 / 1200), None, None, 0.1, 1.0, 10, 10)
    assert fast is not None
    for method in ("scaling", "log"):
        torch.testing.assert_close(uot_minibatch(C), uot_minibatch(C, method=method), rtol=1e-4, atol=1e-9)
    # batched, padded rows (zero mass) and a zero-mass column
    Q, n, m = 3, 20, 12
    Cb = torch.rand(Q, n, m, generator=gen)
    a, T0 = torch.zeros(Q, n), torch.ones(Q, n, m)
    for i, k in enumerate((20, 11, 4)):
        a[i, :k], T0[i, :k] = 1 / k, 1 / (k * m)
    b = torch.full((m,), 1 / (m - 1))
    b[5] = 0.0
    T = uot_minibatch(Cb, T0, a=a, b=b)
    torch.testing.assert_close(T, uot_minibatch(Cb, T0, a=a, b=b, method="log"), rtol=1e-4, atol=1e-9)
    assert T[1, 11:].abs().max() == 0 and T[:, :, 5].abs().max() == 0
    # fast path declines: kernel could underflow, broken cost (-> checked solver -> uniform plan)
    assert (
        _proximal_scaling(C / C.max(), torch.full((40, 30), 1 / 1200), None, None, 0.01, 1.0, 10, 10) is None
    )
    nan_C = torch.full((3, 2), float("nan"))
    assert _proximal_scaling(nan_C, torch.full((3, 2), 1 / 6), None, None, 0.1, 1.0, 10, 10) is None
    torch.testing.assert_close(uot_minibatch(C, reg=0.01), uot_minibatch(C, reg=0.01, method="log"))
