"""Part B of scBIOT: the SCBIOT scvi-tools model (spec §4, §6, §9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scvi_ext.scbiot as scb
from scvi_ext.scbiot import SCBIOTVAE

_SMALL = {"ffn_factor": 4, "n_prototypes": 16}
_TRAIN = {"max_epochs": 2, "batch_size": 256, "enable_progress_bar": False, "accelerator": "cpu"}


@pytest.fixture(scope="module")
def ot_pbmc(pbmc_counts):
    """300 PBMC cells: PCA -> integrate (rna preset, 2 iterations) -> Leiden pseudo-labels."""
    from scvi_ext.methods import prepare

    a = prepare(
        pbmc_counts[np.random.default_rng(0).choice(pbmc_counts.n_obs, 300, replace=False)].copy(), "lane"
    )
    scb.integrate(a, "rna", obsm_key="X_pca", batch_key="lane", max_iter=2)
    scb.pseudo_labels(a, "X_scbiot_ot", resolution=0.5)
    return a


@pytest.fixture(scope="module")
def trained(ot_pbmc):
    a = ot_pbmc.copy()
    scb.SCBIOT.setup_anndata(a, "X_scbiot_ot", "lane", pseudo_label_key="leiden_scbiot_ot")
    model = scb.SCBIOT(a, **_SMALL)
    model.train(**_TRAIN)
    return model, a


def test_loss_terms_finite_and_ramps_at_epoch0():
    m = SCBIOTVAE(6, 2, n_prototypes=5, ffn_factor=4, has_pseudo_labels=True)
    x, b = torch.randn(40, 6), torch.randint(0, 2, (40, 1))
    m.fit_views(x.numpy(), b.numpy().ravel())
    io = m.inference(x, b)
    out = m.loss(
        {"X": x, "batch": b, "labels": torch.randint(0, 5, (40, 1))},
        io,
        m.generative(io["z1"]),
        center_weight=0.0,
        margin_weight=0.0,
        sup_weight=0.0,
    )
    assert torch.isfinite(out.loss)
    for v in out.extra_metrics.values():
        assert torch.isfinite(torch.as_tensor(v))
    # with the epoch-0 ramps at 0, the total is the VAE + clust + repulse + cons terms only
    e = out.extra_metrics
    vae = float(out.loss.detach()) - float(
        e["clust"] + m.hp["lam_repulse"] * e["repulse"] + m.hp["lam_cons"] * e["cons"]
    )
    rec = sum(v.mean() for v in out.reconstruction_loss.values())
    kl = sum(v.mean() for v in out.kl_local.values())
    assert vae == pytest.approx(float(rec + kl), rel=1e-4)


def test_plan_ramps_follow_spec(trained):
    model, _ = trained
    w = model.history
    # 0-based epochs: centre ramp epoch/8, margin and sup ramps epoch/5
    assert w["center_weight"].values.ravel().tolist() == pytest.approx([0.0, 1 / 8])
    assert w["sup_weight"].values.ravel().tolist() == pytest.approx([0.0, 1 / 5])
    assert w["margin_weight"].values.ravel().tolist() == pytest.approx([0.0, 1.5 / 5])


def test_ema_update_matches_spec():
    m = SCBIOTVAE(3, 2, n_prototypes=4, ffn_factor=4)
    C0 = m.prototypes.detach().clone()
    zc = torch.nn.functional.normalize(torch.randn(10, 16), dim=1)
    p = torch.softmax(torch.randn(10, 4), 1)
    m._cache = {"zc_hat": zc, "p": p, "yhat": p.argmax(1), "y": None}
    m.on_train_batch_end()
    new = torch.nn.functional.normalize(p.t() @ zc / (p.sum(0)[:, None] + 1e-8), dim=1)
    torch.testing.assert_close(m.prototypes.detach(), 0.95 * C0 + 0.05 * new)  # not renormalised afterwards


def test_trains_two_epochs_real_data(trained, ot_pbmc):
    model, a = trained
    assert model.is_trained_
    Z = model.get_latent_representation(n_components=20)
    assert Z.shape == (a.n_obs, 20) and np.isfinite(Z).all()
    assert "nmi_pseudo_train" in model.history and model.best_epoch_ in (0, 1)
    pred = model.predict()
    assert pred.shape == (a.n_obs,) and pred.max() < 16
    soft = model.predict(soft=True)
    np.testing.assert_allclose(soft.to_numpy().sum(1), 1.0, atol=1e-5)
    # views are module buffers
    names = dict(model.module.named_buffers())
    assert {"quantiles", "batch_mu", "batch_sd", "global_mu"} <= set(names)


def test_save_load_identical_latent(trained, tmp_path):
    model, a = trained
    Z = model.get_latent_representation(n_components=20)
    model.save(tmp_path / "m", overwrite=True)
    loaded = scb.SCBIOT.load(tmp_path / "m", adata=a)
    np.testing.assert_array_equal(loaded.get_latent_representation(n_components=20), Z)


def test_query_mapping_reuses_reference_state(trained):
    model, a = trained
    Z_ref = model.get_latent_representation(n_components=20)
    query = a[:60].copy()
    query.obs["lane"] = query.obs["lane"].astype(str)
    query.obs.loc[query.obs_names[:30], "lane"] = "new_lane"
    q = scb.SCBIOT.load_query_data(query, model)
    Zq = q.get_latent_representation(n_components=20)
    assert Zq.shape == (60, 20)
    # cells from known lanes encode exactly as in the reference
    np.testing.assert_allclose(Zq[30:], Z_ref[30:60], atol=1e-5)
    with pytest.raises(ValueError, match="read-out"):
        q.get_latent_representation(n_components=5)


def test_bad_input(ot_pbmc):
    a = ot_pbmc.copy()
    with pytest.raises(KeyError, match="obsm_key"):
        scb.SCBIOT.setup_anndata(a, "X_nope", "lane")
    one = a.copy()
    one.obs["lane"] = "x"
    with pytest.raises(ValueError, match="at least 2"):
        scb.SCBIOT.setup_anndata(one, "X_scbiot_ot", "lane")
    bad = a.copy()
    bad.obsm["X_scbiot_ot"] = bad.obsm["X_scbiot_ot"].copy()
    bad.obsm["X_scbiot_ot"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        scb.SCBIOT.setup_anndata(bad, "X_scbiot_ot", "lane")
    many = a.copy()
    many.obs["many"] = [f"c{i % 20}" for i in range(many.n_obs)]
    scb.SCBIOT.setup_anndata(many, "X_scbiot_ot", "lane", pseudo_label_key="many")
    with pytest.raises(ValueError, match="n_prototypes"):
        scb.SCBIOT(many, n_prototypes=10)
