"""Tests for scvi_ext.sysvi (issue 4): components, parity with scvi.external.SysVI, API, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scvi
import torch

from scvi_ext.methods import prepare
from scvi_ext.nn import VampPrior
from scvi_ext.sysvi import SysVI, SysVIModule, convert_reference_state_dict, run_sysvi
from scvi_ext.train import CycleTrainingPlan, cycle_latent_distance

SYSTEM, SAMPLE, LABEL = "species", "sample", "cell_type"
TRAIN = {"enable_progress_bar": False, "accelerator": "cpu", "enable_checkpointing": False}


@pytest.fixture(scope="module")
def pancreas(pancreas_counts):
    """Prepared pancreas (350 cells, 300 HVGs): log-normalised X, counts layer."""
    return prepare(pancreas_counts, SYSTEM, n_hvg=300)


def _setup(adata, **kwargs):
    ad = adata.copy()
    SysVI.setup_anndata(ad, batch_key=SYSTEM, categorical_covariate_keys=[SAMPLE], **kwargs)
    return ad


def _small(**kw):
    return {"n_hidden": 32, "n_latent": 8, **kw}


# ----------------------------------------------------------------------------- components
@pytest.mark.parametrize("fidelity,scale", [("reference", "sqrt_std"), ("paper", "std")])
def test_prior_components_and_pseudoinput_shapes(pancreas, fidelity, scale):
    ad = _setup(pancreas)
    model = SysVI(ad, n_prior_components=7, fidelity=fidelity, **_small())
    prior = model.module.prior
    assert isinstance(prior, VampPrior)  # the suite's shared VampPrior
    assert prior.component_scale == scale and prior.mixture == "per_dim"
    assert prior.u.shape == (7, ad.n_vars)
    idx = np.asarray(model.init_params_["non_kwargs"]["pseudoinputs_data_indices"])
    np.testing.assert_allclose(prior.u.detach().numpy(), np.asarray(ad.X[idx].todense()), rtol=1e-6)
    covs = prior.pseudoinput_covariates()
    sys_codes = ad.obs[SYSTEM].cat.codes.to_numpy()[idx]
    np.testing.assert_array_equal(
        covs["batch_index"].numpy().ravel(), sys_codes
    )  # pseudo-input keeps its system
    assert len(covs["cat_list"]) == 1 and covs["cat_list"][0].shape == (7, 1)
    comp = prior.component_distribution()
    assert comp.loc.shape == (7, 8) and comp.scale.shape == (7, 8)
    assert torch.allclose(prior.mixture_weights.sum(), torch.tensor(1.0))
    z = torch.randn(5, 8)
    assert prior.log_prob(z).shape == (5,)


def test_standard_normal_prior_option(pancreas):
    model = SysVI(_setup(pancreas), prior="standard_normal", **_small())
    assert not hasattr(model.module.prior, "u")


def test_cycle_distance_zero_for_identical_and_positive_otherwise():
    z = torch.randn(16, 4)
    assert float(cycle_latent_distance(z, z).abs().max()) == 0.0
    assert bool((cycle_latent_distance(z, z + 0.1 * torch.randn(16, 4)) > 0).all())


def test_cycle_switches_system_and_loss_positive(pancreas):
    ad = _setup(pancreas)
    model = SysVI(ad, **_small())
    module = model.module
    tensors = next(iter(model._make_data_loader(ad, batch_size=64)))
    batch = tensors["batch"]
    switched = module.random_select_batch(batch)
    assert bool((switched != batch).all()) and int(switched.max()) < module.n_batch
    inf, gen, loss = module(tensors, loss_kwargs={"z_distance_cycle_weight": 2.0})
    assert "qz_cycle" in inf and float(loss.extra_metrics["cycle_loss"].detach()) > 0
    # weight 0: no cycle pass, zero cycle term
    inf0, _, loss0 = module(tensors, loss_kwargs={"z_distance_cycle_weight": 0.0})
    assert "qz_cycle" not in inf0 and float(loss0.extra_metrics["cycle_loss"].detach()) == 0.0


def test_paper_mode_mocks_covariates_in_cycle(pancreas):
    ad = _setup(pancreas)
    torch.manual_seed(0)
    model = SysVI(ad, fidelity="paper", **_small())
    module = model.module.eval()
    tensors = next(iter(model._make_data_loader(ad, batch_size=64)))
    cb = module.random_select_batch(tensors["batch"])
    _, gen = module(tensors, compute_loss=False, cycle_batch=cb)
    inp = module._get_generative_input(tensors, {"z": torch.zeros(64, 8)})
    cont, cats = module._mock_covariates(inp["cont_covs"], inp["cat_covs"])
    assert cont is None and float(cats[0].abs().sum()) == 0.0 and cats[0].shape == (64, 6)
    # the cycle decode uses the switched system: differs from the reconstruction
    assert not torch.allclose(gen["px_cycle"].loc, gen["px"].loc)


# ----------------------------------------------------------------------------- parity with the reference
def _pair(pancreas, **kwargs):
    scvi.settings.seed = 3
    a = pancreas.copy()
    scvi.external.SysVI.setup_anndata(a, batch_key=SYSTEM, categorical_covariate_keys=[SAMPLE])
    ref = scvi.external.SysVI(a, **kwargs)
    scvi.settings.seed = 3
    ours = SysVI(_setup(pancreas), fidelity="reference", **kwargs)
    return a, ref, ours


@pytest.mark.parametrize("train_mode", [False, True])
def test_reference_fidelity_matches_scvi_sysvi_forward(pancreas, train_mode):
    a, ref, ours = _pair(pancreas)
    # the same seed gives the same initial weights and pseudo-inputs; copy anyway (explicit state exchange)
    ours.module.load_state_dict(convert_reference_state_dict(ref.module.state_dict()), strict=True)
    ref.module.train(train_mode)
    ours.module.train(train_mode)
    tensors = next(iter(ref._make_data_loader(a, batch_size=128)))
    loss_kwargs = {"kl_weight": 1.0, "z_distance_cycle_weight": 2.0}
    torch.manual_seed(11)
    ri, rg, rl = ref.module(tensors, loss_kwargs=loss_kwargs)
    torch.manual_seed(11)  # same RNG stream: dropout masks, eps, cycle systems, prior categories
    oi, og, ol = ours.module(tensors, loss_kwargs=loss_kwargs)

    def close(x, y):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)

    close(ri["qz"].loc, oi["qz"].loc)
    close(ri["qz"].scale, oi["qz"].scale)
    close(ri["z"], oi["z"])
    close(rg["px"].loc, og["px"].loc)
    close(rg["px"].scale, og["px"].scale)
    close(ri["qz_cycle"].loc, oi["qz_cycle"].loc)
    close(ref.module.prior.log_prob(ri["z"]).sum(-1), ours.module.prior.log_prob(oi["z"]))
    close(rl.reconstruction_loss["reconstruction_loss"], ol.reconstruction_loss["reconstruction_loss"])
    close(rl.kl_local["kl_local"], ol.kl_local["kl_local"])
    close(rl.extra_metrics["cycle_loss"], ol.extra_metrics["cycle_loss"])
    close(rl.loss, ol.loss)


def test_paper_fidelity_differs_from_reference(pancreas):
    a, ref, _ = _pair(pancreas)
    scvi.settings.seed = 3
    paper = SysVI(_setup(pancreas), fidelity="paper")
    paper.module.load_state_dict(convert_reference_state_dict(ref.module.state_dict()), strict=True)
    ref.module.eval()
    paper.module.eval()
    tensors = next(iter(ref._make_data_loader(a, batch_size=128)))
    torch.manual_seed(1)
    _, _, rl = ref.module(tensors)
    torch.manual_seed(1)
    _, _, pl = paper.module(tensors)
    assert not torch.allclose(rl.loss, pl.loss)


# ----------------------------------------------------------------------------- training / API
def test_train_two_epochs_real_data_and_save_load(pancreas, tmp_path):
    ad = _setup(pancreas)
    model = SysVI(ad, **_small())
    model.train(max_epochs=2, batch_size=128, **TRAIN)
    assert SysVI._training_plan_cls is CycleTrainingPlan  # the suite's cycle plan
    np.testing.assert_allclose(
        model.history["cycle_weight"].to_numpy(dtype=float).ravel(), 2.0
    )  # scvi SysVI default
    for key in (
        "train_loss",
        "reconstruction_loss_train",
        "kl_local_train",
        "cycle_loss_train",
        "elbo_train",
    ):
        assert key in model.history and np.isfinite(model.history[key].to_numpy(dtype=float)).all()
    lat = model.get_latent_representation()
    assert lat.shape == (ad.n_obs, 8) and np.isfinite(lat).all()
    expr = model.get_normalized_expression(transform_batch="mouse", return_numpy=True)
    own = model.get_normalized_expression(return_numpy=True)
    assert expr.shape == (ad.n_obs, ad.n_vars) and not np.allclose(expr, own)
    model.save(tmp_path / "m", overwrite=True)
    loaded = SysVI.load(tmp_path / "m", adata=ad)
    np.testing.assert_allclose(loaded.get_latent_representation(), lat, rtol=1e-5, atol=1e-6)
    assert loaded.module.fidelity == model.module.fidelity


def test_kl_weight_maps_to_max_kl_weight_and_warmup_reset(pancreas, monkeypatch):
    plans = []

    class Spy(CycleTrainingPlan):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            plans.append(self)

    monkeypatch.setattr(SysVI, "_training_plan_cls", Spy)
    model = SysVI(_setup(pancreas), **_small())
    with pytest.warns(UserWarning, match="max_kl_weight"):
        model.train(
            max_epochs=1,
            plan_kwargs={"kl_weight": 3.0, "n_epochs_kl_warmup": 5, "z_distance_cycle_weight": 5.0},
            **TRAIN,
        )
    assert plans[0].max_kl_weight == 3.0 and plans[0].n_epochs_kl_warmup == 0
    assert plans[0].kl_weight == 3.0
    np.testing.assert_allclose(model.history["cycle_weight"].to_numpy(dtype=float).ravel(), 5.0)


def test_query_mapping_and_new_system_error(pancreas):
    ref_mask = pancreas.obs[SAMPLE].isin(["human1", "human2", "human3", "mouse2"]).to_numpy()
    ref_ad = _setup(pancreas[ref_mask].copy())
    model = SysVI(ref_ad, **_small())
    model.train(max_epochs=1, **TRAIN)
    query = pancreas[~ref_mask].copy()  # new samples (human4, mouse1), known systems
    SysVI.prepare_query_anndata(query, model)
    qmodel = SysVI.load_query_data(query, model)
    qmodel.train(max_epochs=1, **TRAIN)
    lat = qmodel.get_latent_representation()
    assert lat.shape == (query.n_obs, 8) and np.isfinite(lat).all()
    # encoder trunk weights other than covariate columns stay frozen at the reference values
    torch.testing.assert_close(qmodel.module.prior.u, model.module.prior.u)
    bad = pancreas[~ref_mask].copy()
    bad.obs[SYSTEM] = bad.obs[SYSTEM].astype(str).replace({"mouse": "rat"})
    with pytest.raises(ValueError, match="new system"):
        SysVI.load_query_data(bad, model)


def test_nb_likelihood_trains_on_counts(pancreas):
    ad = pancreas.copy()
    SysVI.setup_anndata(ad, batch_key=SYSTEM, layer="counts", categorical_covariate_keys=[SAMPLE])
    model = SysVI(ad, likelihood="nb", **_small())
    assert float(model.module.prior.pseudoinputs.min()) >= 0
    model.train(max_epochs=2, **TRAIN)
    lat = model.get_latent_representation()
    assert lat.shape == (ad.n_obs, 8) and np.isfinite(lat).all()
    assert np.isfinite(model.history["reconstruction_loss_train"].to_numpy(dtype=float)).all()
    freq = model.get_normalized_expression(return_numpy=True)
    np.testing.assert_allclose(freq.sum(1), 1.0, rtol=1e-4)
    # NB on log data is refused
    bad = pancreas.copy()
    SysVI.setup_anndata(bad, batch_key=SYSTEM)
    with pytest.raises(ValueError, match="adata.X"):
        SysVI(bad, likelihood="nb")


def test_run_sysvi_registry_entry(pancreas):
    emb = run_sysvi(
        pancreas,
        SYSTEM,
        categorical_covariate_keys=[SAMPLE],
        max_epochs=1,
        progress_bar=False,
        accelerator="cpu",
        n_hidden=32,
    )
    assert emb.shape == (pancreas.n_obs, 15) and np.isfinite(emb).all()
    assert "_scvi_uuid" not in pancreas.uns and "_scvi_manager_uuid" not in pancreas.uns  # input untouched


# ----------------------------------------------------------------------------- bad input
def test_one_system_only(pancreas):
    ad = pancreas[pancreas.obs[SYSTEM] == "human"].copy()
    with pytest.raises(ValueError, match="batch_key"):
        SysVI.setup_anndata(ad, batch_key=SYSTEM)


def test_nan_in_log_data(pancreas):
    ad = pancreas.copy()
    X = ad.X.toarray()
    X[3, 5] = np.nan
    ad.X = X
    with pytest.raises(ValueError, match="NaN"):
        SysVI.setup_anndata(ad, batch_key=SYSTEM)


def test_counts_where_log_data_expected_warns_with_layer(pancreas):
    ad = pancreas.copy()
    SysVI.setup_anndata(ad, batch_key=SYSTEM, layer="counts")
    with pytest.warns(UserWarning, match=r"adata.layers\['counts'\]"):
        SysVI(ad, **_small())


def test_missing_keys_and_bad_options(pancreas):
    with pytest.raises(KeyError, match="nope"):
        SysVI.setup_anndata(pancreas.copy(), batch_key="nope")
    with pytest.raises(KeyError, match="categorical_covariate_keys"):
        SysVI.setup_anndata(pancreas.copy(), batch_key=SYSTEM, categorical_covariate_keys=["nope"])
    ad = _setup(pancreas)
    with pytest.raises(ValueError, match="fidelity"):
        SysVI(ad, fidelity="exact")
    with pytest.raises(ValueError, match="pseudoinputs_data_indices"):
        SysVI(ad, n_prior_components=3, pseudoinputs_data_indices=np.array([0, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        SysVIModule(n_input=5, n_batch=2, prior="standard_normal")


@pytest.mark.parametrize("fidelity", ["reference", "paper"])
@pytest.mark.parametrize("embed", [False, True])
@pytest.mark.parametrize("likelihood", ["gaussian", "nb"])
def test_forward_backward_all_options(pancreas, fidelity, embed, likelihood):
    ad = pancreas.copy()
    ad.obs["depth"] = np.log1p(np.asarray(ad.layers["counts"].sum(1)).ravel())
    layer = "counts" if likelihood == "nb" else None
    SysVI.setup_anndata(
        ad,
        batch_key=SYSTEM,
        layer=layer,
        categorical_covariate_keys=[SAMPLE],
        continuous_covariate_keys=["depth"],
    )
    model = SysVI(
        ad, fidelity=fidelity, likelihood=likelihood, embed_categorical_covariates=embed, **_small(n_layers=1)
    )
    tensors = next(iter(model._make_data_loader(ad, batch_size=32)))
    _, _, loss = model.module(tensors)
    assert torch.isfinite(loss.loss)
    loss.loss.backward()
    grads = [p.grad for p in model.module.encoder.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
