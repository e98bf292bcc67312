"""Standard normal and VampPrior: shapes, hand-computed mixtures, gradients, covariates, scvi parity."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import stats
from scvi.external.sysvi._base_components import EncoderDecoder
from scvi.external.sysvi._priors import VampPrior as ScviVampPrior
from torch.distributions import Normal

from scvi_ext.nn import (
    PRIOR_NAMES,
    StandardNormalPrior,
    VampPrior,
    make_prior,
    select_pseudoinput_indices,
)

K, G, L = 4, 7, 3


class GaussEncoder(torch.nn.Module):
    """x (+ optional batch one-hot and continuous covariates) -> Normal, with BatchNorm and dropout."""

    def __init__(self, n_input=G, n_latent=L, n_batch=0, n_cont=0):
        super().__init__()
        self.n_batch = n_batch
        self.trunk = torch.nn.Sequential(
            torch.nn.Linear(n_input + n_batch + n_cont, 16),
            torch.nn.BatchNorm1d(16),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.5),
        )
        self.loc = torch.nn.Linear(16, n_latent)
        self.scale = torch.nn.Linear(16, n_latent)
        self.calls: list[dict] = []

    def forward(self, x, batch_index=None, cont=None):
        self.calls.append({"batch_index": batch_index, "cont": cont, "training": self.training})
        parts = [x]
        if batch_index is not None:
            parts.append(torch.nn.functional.one_hot(batch_index[:, 0].long(), self.n_batch).float())
        if cont is not None:
            parts.append(cont)
        h = self.trunk(torch.cat(parts, dim=1))
        return {"q_dist": Normal(self.loc(h), torch.nn.functional.softplus(self.scale(h)) + 1e-3)}


def _hand_log_prob(z, loc, scale, weights, mixture):
    """Slow float64 reference with scipy densities."""
    z, loc, scale, w = (np.asarray(t.detach(), dtype=np.float64) for t in (z, loc, scale, weights))
    out = np.zeros(z.shape[0])
    for i in range(z.shape[0]):
        dens = stats.norm.pdf(z[i][None, :], loc, scale)  # K x L
        if mixture == "per_dim":
            out[i] = sum(np.log((w * dens[:, d]).sum()) for d in range(z.shape[1]))
        else:
            out[i] = np.log((w * dens.prod(axis=1)).sum())
    return out


@pytest.mark.parametrize("mixture", ["per_dim", "joint"])
@pytest.mark.parametrize("component_scale", ["std", "sqrt_std"])
def test_vamp_log_prob_matches_hand_mixture(mixture, component_scale):
    enc = GaussEncoder()
    data = torch.rand(K, G) * 3
    prior = VampPrior(K, G, L, enc, pseudoinput_data=data, mixture=mixture, component_scale=component_scale)
    with torch.no_grad():
        prior.w.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
    torch.testing.assert_close(prior.pseudoinputs, data)
    z = torch.randn(6, L)
    lp = prior.log_prob(z)
    assert lp.shape == (6,)
    enc.eval()
    q = enc(data)["q_dist"]
    scale = q.scale.sqrt() if component_scale == "sqrt_std" else q.scale
    expected = _hand_log_prob(z, q.loc, scale, torch.softmax(prior.w, 0), mixture)
    np.testing.assert_allclose(lp.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    # sample dimension and responsibilities
    assert prior.log_prob(torch.randn(2, 6, L)).shape == (2, 6)
    r = prior.component_posteriors(z)
    assert r.shape == (6, K)
    torch.testing.assert_close(r.sum(-1), torch.ones(6))


def test_vamp_kl_is_single_sample_monte_carlo():
    prior = VampPrior(K, G, L, GaussEncoder())
    qz = Normal(torch.randn(5, L), torch.rand(5, L) + 0.1)
    z = qz.rsample()
    torch.testing.assert_close(prior.kl(qz, z), qz.log_prob(z).sum(-1) - prior.log_prob(z))
    assert prior.log_prob_per_dim(z).shape == (5, L)


def test_gradients_reach_pseudoinputs_weights_encoder_and_covariates():
    enc = GaussEncoder(n_batch=2, n_cont=2)
    prior = VampPrior(
        K,
        G,
        L,
        enc,
        pseudoinput_data=torch.rand(K, G),
        pseudoinput_covariates={"batch_index": torch.tensor([[0], [1], [1], [0]]), "cont": torch.randn(K, 2)},
        categorical_covariates={"batch_index": 2},
    )
    qz = Normal(torch.randn(8, L), torch.ones(8, L))
    prior.kl(qz, qz.rsample()).mean().backward()
    for name, p in [("u", prior.u), ("w", prior.w), ("cont", prior.u_cont["cont"])]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is not None for p in enc.parameters() if p.dim() > 1)
    # the encoder is not a sub-module of the prior: no duplicated state
    assert not any(k.startswith(("encoder", "_encoder")) for k in prior.state_dict())
    assert set(prior.state_dict()) == {"u", "w", "u_cont.cont", "u_cat__batch_index__0"}


def test_categories_kept_and_eval_mode_restored():
    enc = GaussEncoder(n_batch=3)
    codes = torch.tensor([[2], [0], [1], [2]])
    prior = VampPrior(
        K, G, L, enc, pseudoinput_covariates={"batch_index": codes}, categorical_covariates={"batch_index": 3}
    )
    enc.train()
    enc.trunk[3].eval()  # a sub-module deliberately in eval mode stays so
    running = enc.trunk[1].running_mean.clone()
    prior.log_prob(torch.randn(5, L))
    call = enc.calls[-1]
    assert torch.equal(call["batch_index"], codes) and call["training"] is False
    assert torch.equal(enc.trunk[1].running_mean, running)  # BatchNorm ran on running statistics
    assert enc.training and enc.trunk[1].training and not enc.trunk[3].training
    # argmax instead of sampling gives the same categories without consuming RNG
    prior.sample_categories = False
    state = torch.random.get_rng_state()
    prior.pseudoinput_covariates()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(prior.pseudoinput_covariates()["batch_index"], codes)


def test_matches_scvi_sysvi_vampprior():
    """Same encoder, pseudo-inputs and covariates as scvi-tools' SysVI prior -> same log p(z) and KL."""
    torch.manual_seed(0)
    n_batch, n_cats, n_cont = 2, [3], 2
    enc = EncoderDecoder(
        G,
        L,
        n_cat_list=[n_batch, *n_cats],
        n_cont=n_cont,
        n_hidden=16,
        n_layers=2,
        var_mode="sample_feature",
        sample=True,
        dropout_rate=0.1,
    )
    x = torch.rand(K, G)
    batch = torch.tensor([[0], [1], [1], [0]])
    cats = [torch.tensor([[2], [0], [1], [1]])]
    cont = torch.randn(K, n_cont)
    ref = ScviVampPrior(K, enc, x.clone(), [n_batch, *n_cats], batch, cats, cont.clone())
    ours = VampPrior(
        K,
        G,
        L,
        enc,
        pseudoinput_data=x,
        pseudoinput_covariates={"batch_index": batch, "cat_list": cats, "cont": cont},
        categorical_covariates={"batch_index": n_batch, "cat_list": n_cats},
        component_scale="sqrt_std",
        mixture="per_dim",
    )
    enc.train()
    z = torch.randn(9, L)
    torch.testing.assert_close(ours.log_prob(z), ref.log_prob(z).sum(-1))
    torch.testing.assert_close(ours.log_prob_per_dim(z), ref.log_prob(z))
    qz = Normal(torch.randn(9, L), torch.rand(9, L) + 0.2)
    torch.testing.assert_close(ours.kl(qz, z), ref.kl(qz, z))
    assert enc.training


def test_softplus_pseudoinputs_flags_and_errors():
    counts = torch.tensor(np.random.default_rng(0).poisson(3.0, (K, G)), dtype=torch.float32)
    prior = VampPrior(
        K,
        G,
        L,
        GaussEncoder(),
        pseudoinput_data=counts,
        pseudoinput_transform="softplus",
        trainable_weights=False,
        trainable_pseudoinputs=False,
    )
    torch.testing.assert_close(prior.pseudoinputs, counts.clamp_min(1e-4), rtol=1e-4, atol=1e-4)
    assert not prior.w.requires_grad and not prior.u.requires_grad
    with torch.no_grad():
        prior.u.sub_(100.0)
    assert (prior.pseudoinputs >= 0).all()
    with pytest.raises(ValueError, match="shape \\(n_components, n_input\\)"):
        VampPrior(K, G, L, GaussEncoder(), pseudoinput_data=torch.rand(K + 1, G))
    with pytest.raises(ValueError, match=">= 0"):
        VampPrior(
            K, G, L, GaussEncoder(), pseudoinput_data=-torch.rand(K, G), pseudoinput_transform="softplus"
        )
    with pytest.raises(ValueError, match="outside"):
        VampPrior(
            K,
            G,
            L,
            GaussEncoder(n_batch=2),
            pseudoinput_covariates={"b": torch.tensor([0, 1, 2, 0])},
            categorical_covariates={"b": 2},
        )
    with pytest.raises(KeyError, match="categorical_covariates"):
        VampPrior(K, G, L, GaussEncoder(), categorical_covariates={"b": 2})
    with pytest.raises(TypeError, match="nn.Module"):
        VampPrior(K, G, L, lambda x: x)
    with pytest.raises(ValueError, match="latent dimensions"):
        prior.log_prob(torch.randn(3, L + 1))


def test_prior_inside_module_state_and_deepcopy():
    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = GaussEncoder()
            self.prior = VampPrior(K, G, L, self.encoder)

    m = Module()
    keys = list(m.state_dict())
    assert sum(k.startswith("encoder.loc.weight") for k in keys) == 1
    m2 = copy.deepcopy(m)
    assert m2.prior.encoder is m2.encoder and m2.encoder is not m.encoder
    z = torch.randn(3, L)
    m.eval(), m2.eval()
    torch.testing.assert_close(m.prior.log_prob(z), m2.prior.log_prob(z))


def test_standard_normal_prior():
    prior = StandardNormalPrior(n_latent=L)
    z = torch.randn(5, L, dtype=torch.float64)
    np.testing.assert_allclose(prior.log_prob(z).numpy(), stats.norm.logpdf(z.numpy()).sum(1))
    qz = Normal(torch.randn(4, L, dtype=torch.float64), torch.rand(4, L, dtype=torch.float64) + 0.5)
    closed = 0.5 * (qz.scale**2 + qz.loc**2 - 1 - 2 * qz.scale.log()).sum(-1)
    torch.testing.assert_close(prior.kl(qz, None), closed)
    mc = StandardNormalPrior(L, analytic_kl=False)
    samples = qz.rsample((20000,))
    torch.testing.assert_close(mc.kl(qz, samples).mean(0), closed, rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match="latent dimensions"):
        prior.log_prob(torch.randn(2, L + 1))


def test_make_prior_and_indices():
    assert isinstance(
        make_prior(PRIOR_NAMES.STANDARD_NORMAL, n_latent=L, n_components=5, encoder=GaussEncoder()),
        StandardNormalPrior,
    )
    vamp = make_prior("vamp", n_latent=L, n_components=K, n_input=G, encoder=GaussEncoder())
    assert isinstance(vamp, VampPrior) and vamp.n_components == K
    with pytest.raises(ValueError, match="Unknown prior"):
        make_prior("gmm", n_latent=L)
    with pytest.raises(TypeError, match="unexpected"):
        make_prior("standard_normal", n_latent=L, bogus=1)
    np.random.seed(3)  # noqa: NPY002 - the global RNG is what scvi's SysVI draws from
    idx = select_pseudoinput_indices(50, 5)
    np.random.seed(3)  # noqa: NPY002
    np.testing.assert_array_equal(idx, np.random.randint(0, 50, 5))  # noqa: NPY002 - same draw as SysVI
    idx = select_pseudoinput_indices(10, 10, random_state=0, replace=False)
    assert sorted(idx.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="distinct"):
        select_pseudoinput_indices(3, 5, replace=False)
