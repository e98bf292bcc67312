"""uniPort options: label weights, balanced sampler, setup_mudata, saving/loading the global OT plan."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from scvi_ext.uniport import (
    BalancedSourceSampler,
    GlobalPlanStore,
    UniPort,
    UniPortVAE,
    label_reweight,
    prepare_anndata,
)

FAST = {"n_hidden": 64}
QUIET = {"enable_progress_bar": False}


@pytest.fixture(scope="module")
def bmmc(shared_data):
    folder = shared_data / "liger_bmmc_rna_atac"
    return {
        "rna": ad.read_h5ad(folder / "bmmc_rna.h5ad"),
        "atac": ad.read_h5ad(folder / "bmmc_atac_gene_activity.h5ad"),
    }


@pytest.fixture(scope="module")
def bmmc_h(bmmc):
    return prepare_anndata({"atac": bmmc["atac"], "rna": bmmc["rna"]})


# ------------------------------------------------------------------------------------------ label weights
def test_label_reweight_equal_total_per_label():
    labels = np.array(["a"] * 6 + ["b"] * 3 + ["c"])
    w = label_reweight(labels)
    totals = {c: float(w[labels == c].sum()) for c in "abc"}
    assert np.allclose(list(totals.values()), len(labels) / 3)
    with pytest.raises(ValueError, match="empty"):
        label_reweight([])


def test_weighted_common_reconstruction_and_marginals_match_the_reference_formula():
    torch.manual_seed(0)
    m = UniPortVAE(6, 2, [0, 0], reference_idx=1, n_hidden=8, weighted_sources=[True, False])
    x = torch.rand(5, 6)
    x_hat = torch.rand(5, 6).clamp(0.05, 0.95)
    source = torch.tensor([0, 0, 0, 1, 1])
    w = torch.tensor([1.0, 2.0, 3.0, float("nan"), float("nan")])
    got = m._weighted_common(x_hat, x, source, {"uniport_weight": w[:, None]})
    bce0 = F.binary_cross_entropy(x_hat[:3], x[:3], weight=w[:3, None])  # weighted source
    bce1 = F.binary_cross_entropy(x_hat[3:], x[3:])  # unweighted source
    torch.testing.assert_close(got, 2000 * (bce0 + bce1) / 2)
    # OT marginals: the weighted query's masses are its normalised weights
    inference = m.inference(x, source[:, None])
    tensors = {"X": x, "batch": source[:, None].float(), "uniport_weight": w[:, None]}
    m._ot_term(tensors, inference["qz_m"], inference["qz_s"], source, None)
    T = m._last_ot[0]
    unweighted = UniPortVAE(6, 2, [0, 0], reference_idx=1, n_hidden=8)
    unweighted.load_state_dict(m.state_dict())
    unweighted._ot_term(tensors, inference["qz_m"], inference["qz_s"], source, None)
    assert not torch.allclose(T, unweighted._last_ot[0])
    assert float(T[2].sum()) > float(T[0].sum())  # the heaviest cell sends the most mass


def test_label_weights_train_and_bad_weights(bmmc_h):
    a = bmmc_h.copy()
    src = a.obs["source"].astype(str).to_numpy()
    pseudo = np.where(np.arange(a.n_obs) % 3 == 0, "x", "y")
    a.obs["w"] = np.where(src == "rna", label_reweight(pseudo), np.nan)
    UniPort.setup_anndata(a, weight_key="w")
    model = UniPort(a, **FAST)
    assert model.module.weighted_sources == [False, True]
    model.train(max_epochs=2, **QUIET)
    assert np.isfinite(model.history["train_loss"].to_numpy(float)).all()
    b = bmmc_h.copy()
    b.obs["w"] = np.where(np.arange(b.n_obs) % 2 == 0, 1.0, np.nan)
    with pytest.raises(ValueError, match="mixes weights and NaN"):
        UniPort.setup_anndata(b, weight_key="w")
    b.obs["w"] = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        UniPort.setup_anndata(b, weight_key="w")
    with pytest.raises(KeyError, match="weight_key"):
        UniPort.setup_anndata(b, weight_key="nope")


# ----------------------------------------------------------------------------------------- balanced sampler
def test_balanced_sampler_batches():
    codes = np.array([0] * 95 + [1] * 5 + [2] * 30)
    s = BalancedSourceSampler(codes, batch_size=30)
    torch.manual_seed(1)
    first = list(s)
    torch.manual_seed(1)
    assert list(s) == first  # reproducible under torch's seed
    assert len(first) == len(s) == 130 // 30
    for batch in first:
        counts = np.bincount(codes[batch], minlength=3)
        assert counts.tolist() == [10, 10, 10]
        assert len(set(batch)) >= 25  # the 5-cell dataset repeats, the others do not within a batch
    with pytest.raises(ValueError, match="batch_size"):
        BalancedSourceSampler(codes, batch_size=0)


def test_balanced_sampler_trains_with_a_tiny_dataset(bmmc):
    a = prepare_anndata({"atac": bmmc["atac"][:12].copy(), "rna": bmmc["rna"]})
    UniPort.setup_anndata(a)
    model = UniPort(a, **FAST)
    model.train(max_epochs=3, batch_size=64, sampler="balanced", save_ot=True, **QUIET)
    ot = model.history["ot_loss_train"].to_numpy(float).ravel()
    assert len(ot) == 3 and (ot > 0).all()  # every batch has both datasets
    plan = np.asarray(model.get_ot_plan())
    assert plan.shape == (12, 340) and np.isfinite(plan).all()
    with pytest.raises(ValueError, match="sampler"):
        model.train(max_epochs=1, sampler="nope")


# ------------------------------------------------------------------------------------------- setup_mudata
def test_setup_mudata_both_layouts(bmmc, pbmc_counts):
    mudata = pytest.importorskip("mudata")
    md = mudata.MuData({"atac": bmmc["atac"], "rna": bmmc["rna"]})
    prepared = UniPort.setup_mudata(md)
    assert prepared.obs["source"].cat.categories.tolist() == ["atac", "rna"]
    model = UniPort(prepared, **FAST)
    model.train(max_epochs=1, **QUIET)
    assert model.get_latent_representation().shape == (680, 16)
    # one modality with a dataset column, labels carried over
    md2 = mudata.MuData({"rna": pbmc_counts.copy()})
    lanes = UniPort.setup_mudata(md2, source_key="lane", labels_key="bulk_labels", n_common_hvg=300)
    assert lanes.obs["source"].nunique() == pbmc_counts.obs["lane"].nunique()
    assert (lanes.obs["bulk_labels"] != "").all()
    with pytest.raises(KeyError, match="not in mdata.mod"):
        UniPort.setup_mudata(md, modalities=["atac", "protein"])
    with pytest.raises(KeyError, match="source_key"):
        UniPort.setup_mudata(md2, source_key="nope")


# -------------------------------------------------------------------------------------- plan save / load
def test_save_and_load_global_plan_dense_and_sparse(bmmc_h, tmp_path):
    a = bmmc_h.copy()
    UniPort.setup_anndata(a)
    model = UniPort(a, **FAST)
    model.train(max_epochs=2, save_ot=True, **QUIET)
    plan = np.array(model.get_ot_plan())
    labels = np.where(np.arange(a.n_obs) % 2 == 0, "p", "q")
    a.obs["lab"] = labels
    expected = model.transfer_labels("lab", method="ot")
    model.save(tmp_path / "dense", overwrite=True)
    loaded = UniPort.load(tmp_path / "dense", adata=a)
    np.testing.assert_array_equal(np.asarray(loaded.get_ot_plan()), plan)
    pd.testing.assert_frame_equal(loaded.transfer_labels("lab", method="ot"), expected)
    # sparse, entries below 1e-3 of the max dropped
    model.save(tmp_path / "sparse", overwrite=True, ot_plan_sparse=True, ot_plan_threshold=1e-3)
    sparse = UniPort.load(tmp_path / "sparse", adata=a).get_ot_plan()
    assert sp.issparse(sparse)
    keep = plan >= 1e-3 * plan.max()
    np.testing.assert_array_equal(sparse.toarray()[keep], plan[keep])
    assert (sparse.toarray()[~keep] == 0).all()
    props = UniPort.load(tmp_path / "sparse", adata=a).deconvolve("lab", spot_source="atac")
    np.testing.assert_allclose(props.sum(1).to_numpy(), 1.0, atol=1e-6)
    # without a plan: nothing written, and load gives no plan
    model._plan_store = None
    model.save(tmp_path / "dense", overwrite=True)
    with pytest.raises(ValueError, match="No global OT plan"):
        UniPort.load(tmp_path / "dense", adata=a).get_ot_plan()


def test_plan_store_memmap_roundtrip(tmp_path):
    store = GlobalPlanStore({0: (5000, 3), 2: (4, 2)}, max_dense_bytes=0, directory=str(tmp_path / "mm"))
    assert isinstance(store.plans[0], np.memmap)
    store.scatter(0, np.array([0, 4999]), np.array([1]), torch.tensor([[0.5], [0.25]]))
    store.save(str(tmp_path / "saved"))
    back = GlobalPlanStore.load(str(tmp_path / "saved"))
    np.testing.assert_array_equal(np.asarray(back.plans[0]), np.asarray(store.plans[0]))
    assert back.plans[2].shape == (4, 2)
    with pytest.raises(FileNotFoundError, match="plans.json"):
        GlobalPlanStore.load(str(tmp_path))
    with pytest.raises(ValueError, match="threshold"):
        store.save(str(tmp_path / "x"), sparse=True, threshold=-1.0)
