"""NB / ZINB log-likelihoods against torch.distributions, scipy and scvi.distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

from scvi_ext.nn import nb_log_prob, nb_log_prob_logits, zinb_log_prob


@pytest.fixture
def nb_params():
    g = torch.Generator().manual_seed(0)
    mu = torch.exp(torch.randn(20, 7, generator=g, dtype=torch.float64) * 2)  # 0.02 .. 50
    theta = torch.exp(torch.randn(20, 7, generator=g, dtype=torch.float64))
    x = torch.poisson(mu * 1.3, generator=g)
    return x, mu, theta


def test_nb_matches_torch_scipy_and_scvi(nb_params):
    x, mu, theta = nb_params
    ours = nb_log_prob(x, mu, theta, eps=0.0)
    torch_nb = torch.distributions.NegativeBinomial(total_count=theta, logits=mu.log() - theta.log())
    torch.testing.assert_close(ours, torch_nb.log_prob(x), rtol=1e-9, atol=1e-9)
    scipy_lp = stats.nbinom.logpmf(x.numpy(), theta.numpy(), (theta / (theta + mu)).numpy())
    np.testing.assert_allclose(ours.numpy(), scipy_lp, rtol=1e-9, atol=1e-9)
    scvi_lp = NegativeBinomial(mu=mu, theta=theta, validate_args=False).log_prob(x)
    torch.testing.assert_close(nb_log_prob(x, mu, theta), scvi_lp)
    # 1-D theta (one dispersion per gene) broadcasts over cells
    lp = nb_log_prob(x, mu, theta[0])
    torch.testing.assert_close(lp[3], nb_log_prob(x[3], mu[3], theta[0]))


def test_zinb_matches_mixture_and_scvi(nb_params):
    x, mu, theta = nb_params
    zi_logits = torch.randn(20, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = zinb_log_prob(x, mu, theta, zi_logits, eps=0.0)
    pi = torch.sigmoid(zi_logits).numpy()
    nb = stats.nbinom.pmf(x.numpy(), theta.numpy(), (theta / (theta + mu)).numpy())
    expected = np.log(np.where(x.numpy() == 0, pi + (1 - pi) * nb, (1 - pi) * nb))
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-8, atol=1e-8)
    scvi_lp = ZeroInflatedNegativeBinomial(
        mu=mu, theta=theta, zi_logits=zi_logits, validate_args=False
    ).log_prob(x)
    torch.testing.assert_close(zinb_log_prob(x, mu, theta, zi_logits), scvi_lp)
    assert zinb_log_prob(x[0], mu[0], theta[0], zi_logits[0]).shape == (7,)  # no extra leading dim
    # very negative logits: ZINB -> NB
    torch.testing.assert_close(
        zinb_log_prob(x, mu, theta, torch.full_like(mu, -40.0)),
        nb_log_prob(x, mu, theta),
        rtol=1e-9,
        atol=1e-9,
    )


def test_nb_logits_parametrisation(nb_params):
    x, mu, theta = nb_params
    psi = torch.randn_like(mu) * 5  # PIANO's log-odds, wide range
    xi = mu * torch.exp(-psi)
    ours = nb_log_prob_logits(x, xi, psi)
    ref = torch.distributions.NegativeBinomial(total_count=xi, logits=psi).log_prob(x)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    # same distribution as the (mu, theta) form with theta = xi
    torch.testing.assert_close(ours, nb_log_prob(x, mu, xi, eps=0.0), rtol=1e-8, atol=1e-8)


def test_stable_on_extremes():
    x = torch.tensor([0.0, 1.0, 1e4, 0.0])
    mu = torch.tensor([1e-8, 1e5, 1e-3, 1e4])
    theta = torch.tensor([1e-6, 1e6, 1e-4, 1e8])
    for lp in (
        nb_log_prob(x, mu, theta),
        zinb_log_prob(x, mu, theta, torch.zeros(4)),
        nb_log_prob_logits(x, theta, torch.tensor([-50.0, 50.0, 0.0, -30.0])),
    ):
        assert torch.isfinite(lp).all() and (lp <= 1e-6).all()
