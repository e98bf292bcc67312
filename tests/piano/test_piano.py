"""Tests of scvi_ext.piano (issue 3 test list; spec piano.md §7)."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scipy.stats as st
import torch
from scvi import REGISTRY_KEYS

from scvi_ext.piano import (
    PIANO,
    PIANOModule,
    choose_data_mode,
    expand_csr_rows,
    kl_weight_at,
    make_resident_data,
    nb_log_prob_xi_psi,
    zinb_log_prob_xi_psi,
)


def _toy(n: int = 256, g: int = 60, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = rng.negative_binomial(2, 0.4, size=(n, g)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "batch": rng.choice(["b0", "b1", "b2"], n),
            "tech": rng.choice(["10x", "smart", "Unknown"], n),
            "age": rng.normal(50, 10, n),
        },
        index=[f"c{i}" for i in range(n)],
    )
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))


@pytest.fixture
def toy():
    a = _toy()
    PIANO.setup_anndata(a, categorical_covariate_keys=["batch", "tech"], continuous_covariate_keys=["age"])
    return a


def test_registry_two_categorical_one_continuous(toy):
    m = PIANO(toy, n_hidden=32, n_latent=4)
    assert m.module.n_cats_per_key == [3, 3]
    assert m.module.n_covariates == 3 + 3 + 1
    cov = m._covariate_matrix().numpy()
    codes = toy.obs["batch"].map({"b0": 0, "b1": 1, "b2": 2}).to_numpy()
    np.testing.assert_array_equal(cov[:, :3].argmax(1), codes)
    # "Unknown" -> all-zero block, other values one-hot
    unk = (toy.obs["tech"] == "Unknown").to_numpy()
    assert np.all(cov[unk, 3:6] == 0) and np.all(cov[~unk, 3:6].sum(1) == 1)
    # z-scored continuous column
    assert abs(cov[:, 6].mean()) < 1e-4 and abs(cov[:, 6].std() - 1) < 1e-3
    # no continuous scaling when asked
    a = _toy()
    PIANO.setup_anndata(a, continuous_covariate_keys=["age"], scale_continuous=False)
    np.testing.assert_allclose(
        PIANO(a, n_hidden=16)._covariate_matrix()[:, 0].numpy(), a.obs["age"], rtol=1e-5
    )


def test_glm_shapes_and_initial_values():
    torch.manual_seed(0)
    m = PIANOModule(n_input=50, n_cats_per_key=[3, 2], n_continuous=1, n_hidden=16, n_latent=4).eval()
    assert [p.shape for p in m.glm_w_mu_cat] == [(50, 3), (50, 2)]
    assert m.glm_w_mu_cont.shape == (50, 1) and m.decoder_cov_cat[0].shape == (16, 3)
    x = torch.poisson(torch.full((8, 50), 3.0))
    x[0] = 0.0  # library below the floor of 200
    cov = torch.randn(8, 6)
    z = torch.randn(8, 4)
    out = m.generative(z, x.sum(1, keepdim=True), cov)
    lib = torch.clamp(x.sum(1, keepdim=True), min=200.0)
    torch.testing.assert_close(out["mu"], math.e * lib * out["rho"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["psi"], torch.ones(8, 50))
    torch.testing.assert_close(out["rho"].sum(1), torch.ones(8))
    # E[x] = mu and Var[x] = mu (1 + e^psi) for the returned distribution
    torch.testing.assert_close(out["px"].mean, out["mu"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["px"].variance, out["mu"] * (1 + math.e), rtol=1e-5, atol=1e-6)


def test_nb_log_pmf_matches_torch_and_scipy():
    torch.manual_seed(0)
    x = torch.poisson(torch.rand(16, 30) * 5)
    xi = torch.rand(16, 30) * 3 + 0.1
    psi = torch.randn(16, 30)
    ref = torch.distributions.NegativeBinomial(total_count=xi, logits=psi).log_prob(x).sum(-1)
    torch.testing.assert_close(nb_log_prob_xi_psi(x, xi, psi), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(nb_log_prob_xi_psi(x, xi, psi, sparse=True), ref, rtol=1e-5, atol=1e-4)
    # scipy: nbinom(n=xi, p=1 - sigmoid(psi)) (scipy's p is the success probability of the other outcome)
    sp_ref = st.nbinom.logpmf(x.numpy(), xi.double().numpy(), 1 - torch.sigmoid(psi.double()).numpy()).sum(-1)
    np.testing.assert_allclose(nb_log_prob_xi_psi(x, xi, psi).numpy(), sp_ref, rtol=1e-5)
    # zero-inflated version against scvi's distribution (mu = xi e^psi, theta = xi)
    from scvi.distributions import ZeroInflatedNegativeBinomial

    gate = torch.randn(16, 30)
    zinb = ZeroInflatedNegativeBinomial(mu=xi * torch.exp(psi), theta=xi, zi_logits=gate).log_prob(x).sum(-1)
    torch.testing.assert_close(zinb_log_prob_xi_psi(x, xi, psi, gate), zinb, rtol=1e-4, atol=1e-3)


def test_kl_schedule_per_step_capped():
    assert kl_weight_at(0, 0, 10, 400, 1.0, 0.0) == 0.0
    assert kl_weight_at(3, 5, 10, 400, 1.0, 0.0) == pytest.approx(3.5 / 400)
    assert kl_weight_at(500, 0, 10, 400, 1.0, 0.0) == 1.0
    assert kl_weight_at(1, 0, 10, 2, 0.5, 0.1) == pytest.approx(0.3)
    # the Lightning plan uses the same per-step value (scvi's _compute_kl_weight with 400 * N_b steps)
    from scvi.train._trainingplans import _compute_kl_weight

    assert _compute_kl_weight(3, 3 * 10 + 5, None, 400 * 10, 1.0, 0.0) == pytest.approx(3.5 / 400)


def test_csr_expander_and_memory_rule():
    rng = np.random.default_rng(0)
    X = sp.random(40, 25, density=0.2, format="csr", random_state=0, dtype=np.float32)
    X.data = np.ceil(X.data * 10)
    rows = torch.as_tensor(rng.permutation(40)[:16])
    t = torch.as_tensor
    out = expand_csr_rows(t(X.indptr).long(), t(X.indices), t(X.data.astype(np.int16)), rows, 25)
    np.testing.assert_array_equal(out.numpy(), X.toarray()[rows.numpy()])
    big = sp.csr_matrix(np.array([[0, 60000], [40000, 0]], dtype=np.float32))  # > int16 range, exact
    d = make_resident_data(big, torch.zeros(2, 0), torch.device("cpu"), "csr")
    np.testing.assert_array_equal(d.rows(torch.tensor([0, 1]))[0].numpy(), big.toarray())
    d = make_resident_data(big, torch.zeros(2, 0), torch.device("cpu"), "dense")
    np.testing.assert_array_equal(d.rows(torch.tensor([1, 0]))[0].numpy(), big.toarray()[[1, 0]])
    for mode in ("dense", "csr", "host"):
        d = make_resident_data(X, torch.zeros(40, 2), torch.device("cpu"), mode)
        xb, _, lb = d.rows(rows)
        np.testing.assert_array_equal(xb.numpy(), X.toarray()[rows.numpy()])
        np.testing.assert_allclose(
            lb.numpy(),
            __import__("scipy.special").special.gammaln(X.toarray()[rows.numpy()] + 1).sum(1),
            rtol=1e-5,
        )
    assert make_resident_data(X, torch.zeros(40, 0), torch.device("cpu")).dense.dtype == torch.int16
    cpu = torch.device("cpu")
    assert choose_data_mode(200_000, 2000, 10**8, 100.0, cpu, free_bytes=10 * 2**30) == "dense"
    assert choose_data_mode(200_000, 2000, 5 * 10**7, 100.0, cpu, free_bytes=2**30) == "csr"
    assert choose_data_mode(200_000, 2000, 5 * 10**7, None, cpu, free_bytes=2**29) == "host"


@pytest.mark.parametrize("fast", [True, False])
def test_training_on_real_data_lowers_loss(pbmc_counts, fast):
    a = pbmc_counts.copy()
    PIANO.setup_anndata(a, batch_key="lane")
    m = PIANO(a, n_hidden=64)
    m.train(max_epochs=2 if fast else 3, fast=fast, progress_bar=False, plan_kwargs={"lr": 1e-3})
    for key in ("train_loss", "elbo_train", "reconstruction_loss_train", "kl_local_train", "kl_weight"):
        assert key in m.history, key
    elbo = m.history["elbo_train"].iloc[:, 0].to_numpy()
    assert elbo[-1] < elbo[0]
    z = m.get_latent_representation()
    assert z.shape == (a.n_obs, 32) and np.isfinite(z).all()
    assert m.is_trained


def test_encoder_is_covariate_free_and_deterministic(toy):
    m = PIANO(toy, n_hidden=32, n_latent=4)
    m.train(max_epochs=1, progress_bar=False)
    z1 = m.get_latent_representation()
    np.testing.assert_array_equal(z1, m.get_latent_representation())
    other = toy.copy()
    other.obs["batch"] = np.random.default_rng(1).permutation(other.obs["batch"].to_numpy())
    other.obs["age"] = 0.0
    np.testing.assert_allclose(m.get_latent_representation(other), z1, rtol=1e-6, atol=1e-6)
    assert not np.allclose(m.get_latent_representation(give_mean=False), z1)


def test_counterfactual_semantics(toy):
    m = PIANO(toy, n_hidden=32, n_latent=4)
    m.train(max_epochs=1, progress_bar=False)
    with torch.no_grad():  # give the covariates a visible effect
        for p in (*m.module.glm_w_mu_cat, m.module.glm_w_mu_cont):
            p.normal_(0, 0.5)
    cf = m.get_counterfactual_expression(covariates=None, give_mean_z=True)
    assert isinstance(cf, pd.DataFrame) and cf.shape == (toy.n_obs, toy.n_vars)
    # None reproduces the reconstruction mean mu
    tensors = {
        k: torch.as_tensor(np.asarray(v.toarray() if sp.issparse(v) else v))
        for k, v in [
            (REGISTRY_KEYS.X_KEY, m.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)),
            (REGISTRY_KEYS.CAT_COVS_KEY, m.adata_manager.get_from_registry(REGISTRY_KEYS.CAT_COVS_KEY)),
            (REGISTRY_KEYS.CONT_COVS_KEY, m.adata_manager.get_from_registry(REGISTRY_KEYS.CONT_COVS_KEY)),
        ]
    }
    tensors[REGISTRY_KEYS.X_KEY] = tensors[REGISTRY_KEYS.X_KEY].float()
    with torch.no_grad():
        inf = m.module.inference(tensors[REGISTRY_KEYS.X_KEY])
        gen = m.module.generative(
            inf["qz"].loc,
            tensors[REGISTRY_KEYS.X_KEY].sum(1, keepdim=True),
            m.module.covariates_from_tensors(tensors, False),
        )
    np.testing.assert_allclose(cf.to_numpy(), gen["mu"].numpy(), rtol=1e-4)
    # "marginal": 1/n_k over real categories of every categorical key, continuous kept
    cov = m._covariate_matrix()
    marg = m._replace_covariates(cov, "marginal")
    np.testing.assert_allclose(marg[:, :3].numpy(), 1 / 3)
    tech_cats = m._categories("tech")
    expect = np.array([0.0 if c == "Unknown" else 0.5 for c in tech_cats])
    np.testing.assert_allclose(marg[:, 3:6].numpy(), np.tile(expect, (toy.n_obs, 1)))
    np.testing.assert_array_equal(marg[:, 6].numpy(), cov[:, 6].numpy())
    # dict touches only the named keys
    d = m._replace_covariates(cov, {"batch": "b1"})
    np.testing.assert_array_equal(d[:, :3].numpy(), np.tile([0.0, 1.0, 0.0], (toy.n_obs, 1)))
    np.testing.assert_array_equal(d[:, 3:].numpy(), cov[:, 3:].numpy())
    d2 = m._replace_covariates(cov, {"age": 50.0, "tech": ["10x", "smart"]})
    assert np.allclose(d2[:, 6].numpy(), d2[0, 6].item())
    cf_m = m.get_counterfactual_expression(covariates="marginal", give_mean_z=True, return_numpy=True)
    assert cf_m.shape == (toy.n_obs, toy.n_vars) and not np.allclose(cf_m, cf.to_numpy())
    with pytest.raises(KeyError, match="not model covariates"):
        m.get_counterfactual_expression(covariates={"donor": "x"})
    with pytest.raises(KeyError, match="not a category"):
        m.get_counterfactual_expression(covariates={"batch": "b9"})
    assert m.get_normalized_expression(return_numpy=True).sum(1) == pytest.approx(1.0, rel=1e-4)


def test_save_load_identical_latent(toy, tmp_path):
    m = PIANO(toy, n_hidden=32, n_latent=4)
    m.train(max_epochs=1, progress_bar=False)
    z = m.get_latent_representation()
    m.save(tmp_path / "piano", overwrite=True)
    m2 = PIANO.load(tmp_path / "piano", adata=toy)
    np.testing.assert_array_equal(m2.get_latent_representation(), z)
    torch.testing.assert_close(m2.module.cont_std, m.module.cont_std)


def test_query_mapping_new_category(toy):
    ref = PIANO(toy, n_hidden=32, n_latent=4)
    ref.train(max_epochs=2, progress_bar=False)
    z_ref = ref.get_latent_representation()
    state0 = {k: v.clone() for k, v in ref.module.state_dict().items()}
    q = _toy(n=200, seed=1)
    q.obs["batch"] = np.where(np.arange(200) % 2 == 0, "b_new", "b0")
    q.obs["tech"] = np.where(np.arange(200) % 3 == 0, "drop", "10x")
    q = q[:, ::-1].copy()  # genes in another order
    PIANO.prepare_query_anndata(q, ref)
    # embedding a query needs no training
    q_free = q.copy()
    assert ref.get_latent_representation(q_free).shape == (200, 4)
    with pytest.raises(KeyError, match="not trained with"):
        ref.get_counterfactual_expression(q_free)
    qm = PIANO.load_query_data(q, ref)
    assert qm.module.n_cats_per_key == [4, 4]
    for name, t in qm.module.state_dict().items():
        old = state0[name]
        if t.shape != old.shape:  # grew on the last dim only
            assert t.shape[:-1] == old.shape[:-1] and t.shape[-1] > old.shape[-1], name
    qm.train(max_epochs=3, progress_bar=False, plan_kwargs={"lr": 1e-2})
    new_state = qm.module.state_dict()
    for name, old in state0.items():
        t = new_state[name]
        if name.endswith("num_batches_tracked"):
            continue
        np.testing.assert_array_equal(
            t[..., : old.shape[-1]].numpy() if t.dim() else t.numpy(), old.numpy(), err_msg=name
        )
    assert not torch.equal(new_state["glm_w_mu_cat.0"][:, 3], torch.zeros(toy.n_vars))  # new column trained
    # reference latents bit-identical after query training
    np.testing.assert_array_equal(qm.get_latent_representation(toy), z_ref)
    assert qm.history["kl_weight"].iloc[-1, 0] == pytest.approx(float(ref.module.kl_weight_final))


def test_bad_input_errors(toy, pbmc_counts):
    a = _toy()
    a.X = a.X.astype(np.float32) * 0.5
    with pytest.raises(ValueError, match="integer counts"):
        PIANO.setup_anndata(a)
    b = _toy()
    b.X = b.X.toarray()
    b.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        PIANO.setup_anndata(b)
    with pytest.raises(KeyError, match="categorical_covariate_keys='donor'"):
        PIANO.setup_anndata(_toy(), categorical_covariate_keys=["donor"])
    with pytest.raises(KeyError, match="batch_key"):
        PIANO.setup_anndata(_toy(), batch_key="nope")
    with pytest.raises(ValueError, match="list of obs column"):
        PIANO.setup_anndata(_toy(), categorical_covariate_keys="batch")
    m = PIANO(toy, n_hidden=16, n_latent=4)
    m.train(max_epochs=1, progress_bar=False)
    q = toy[:, :40].copy()
    with pytest.raises(ValueError, match="lacks 20"):
        m.get_latent_representation(q)
    with pytest.raises(ValueError, match="lacks 20"):
        PIANO.load_query_data(q, m)
    with pytest.raises(ValueError, match="distribution"):
        PIANO(toy, distribution="poisson")


@pytest.mark.parametrize(
    ("distribution", "parameterization", "adversarial"),
    [("zinb", "ksi-psi", False), ("nb", "mu-theta", False), ("nb", "ksi-psi", True)],
)
def test_options_train(toy, distribution, parameterization, adversarial):
    m = PIANO(
        toy,
        n_hidden=32,
        n_latent=4,
        distribution=distribution,
        parameterization=parameterization,
        adversarial=adversarial,
    )
    m.train(max_epochs=3, progress_bar=False, plan_kwargs={"lr": 1e-3})
    elbo = m.history["elbo_train"].iloc[:, 0].to_numpy()
    assert np.isfinite(elbo).all() and elbo[-1] < elbo[0]
    if adversarial:
        assert "adv_train" in m.history


def test_sparse_nll_gradients_match_autograd():
    from scvi_ext.piano import nb_log_prob_log_xi_psi

    torch.manual_seed(0)
    x = torch.poisson(torch.rand(6, 9, dtype=torch.float64) * 3)
    log_xi = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    psi = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nb_log_prob_log_xi_psi(a, b, x), (log_xi, psi))
    dense = nb_log_prob_xi_psi(x, torch.exp(log_xi), psi)
    torch.testing.assert_close(nb_log_prob_log_xi_psi(log_xi, psi, x), dense)
    lgx1 = torch.lgamma(x + 1).sum(1)
    torch.testing.assert_close(nb_log_prob_log_xi_psi(log_xi, psi, x, lgx1), dense)


def test_fast_and_lightning_paths_agree():
    """Same objective, schedule and optimiser in both runners: per-epoch ELBO within 2 % (orders differ)."""
    from scvi_ext.datasets import simulate_counts

    a = simulate_counts(1000, 200, n_batches=2, seed=0)
    PIANO.setup_anndata(a, batch_key="batch")
    elbos = {}
    for fast in (True, False):
        torch.manual_seed(0)
        m = PIANO(a, n_hidden=64, dropout_rate=0.0)
        m.train(max_epochs=2, fast=fast, progress_bar=False, plan_kwargs={"lr": 1e-3})
        elbos[fast] = m.history["elbo_train"].iloc[:, 0].to_numpy(dtype=float)
    np.testing.assert_allclose(elbos[True], elbos[False], rtol=0.02)
