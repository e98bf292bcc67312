"""Cycle-consistency distance (sysVI) and the switched-category draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scvi_ext.train import cycle_latent_distance, random_other_category


def test_zero_for_identical_positive_otherwise():
    z = torch.randn(16, 4)
    assert torch.equal(cycle_latent_distance(z, z.clone()), torch.zeros(16))
    d = cycle_latent_distance(z, z + 0.1 * torch.randn(16, 4))
    assert (d > 0).all()


def test_matches_numpy_reference_and_scvi_sysvi():
    z_a, z_b = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    pooled = np.concatenate([z_a.numpy(), z_b.numpy()])
    mean, sd = pooled.mean(0), pooled.std(0, ddof=1)
    expected = (((z_a.numpy() - mean) / sd - (z_b.numpy() - mean) / sd) ** 2).sum(1)
    np.testing.assert_allclose(cycle_latent_distance(z_a, z_b).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(
        cycle_latent_distance(z_a, z_b, standardize=False).numpy(), ((z_a - z_b) ** 2).sum(1).numpy()
    )
    from scvi.external.sysvi._module import SysVAE

    qa = torch.distributions.Normal(z_a, torch.ones_like(z_a))
    qb = torch.distributions.Normal(z_b, torch.ones_like(z_b))
    torch.testing.assert_close(cycle_latent_distance(z_a, z_b), SysVAE.latent_cycle_consistency(qa, qb))


def test_standardisation_removes_scale_and_keeps_gradient():
    z_a = torch.randn(12, 3, requires_grad=True)
    z_b = torch.randn(12, 3)
    d = cycle_latent_distance(z_a, z_b)
    torch.testing.assert_close(
        cycle_latent_distance(10 * z_a, 10 * z_b), d
    )  # shrinking the latent doesn't help
    d.mean().backward()
    assert torch.isfinite(z_a.grad).all() and z_a.grad.abs().sum() > 0
    const = torch.ones(4, 2)
    assert torch.isfinite(cycle_latent_distance(const, const)).all()
    with pytest.raises(ValueError, match="shape"):
        cycle_latent_distance(z_a, z_b[:3])


def test_random_other_category_never_same_and_uniform():
    idx = torch.tensor([0, 1, 2, 3] * 2000)[:, None]
    new = random_other_category(idx.float(), 4, generator=torch.Generator().manual_seed(0))
    assert new.shape == idx.shape and new.dtype == torch.long
    assert (new != idx).all() and new.min() >= 0 and new.max() <= 3
    counts = torch.bincount(new[idx == 0], minlength=4)[1:].double()
    assert (counts - counts.mean()).abs().max() < 5 * counts.mean().sqrt()
    with pytest.raises(ValueError, match="n_categories"):
        random_other_category(idx, 1)
    with pytest.raises(ValueError, match="outside"):
        random_other_category(idx, 3)
