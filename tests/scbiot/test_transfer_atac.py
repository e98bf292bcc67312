"""Label transfer, ATAC helpers and the registry entry of scBIOT."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import scvi_ext.scbiot as scb


def test_transfer_labels_logreg_and_knn(make_emb):
    a = make_emb(n=400, d=8, shift=1.0)
    truth = a.obs["cell_type"].astype(str).to_numpy()
    part = truth.copy()
    part[a.obs["batch"].astype(str).to_numpy() == "b2"] = "unknown"  # one batch is the query
    a.obs["partial"] = part
    scb.integrate_ot(a, "X_pca", "batch", max_iter=2)
    for mode in ("logreg", "knn"):
        res = scb.transfer_labels(
            a, label_key="partial", use_rep="X_scbiot_ot", mode=mode, second_rep="X_pca"
        )
        q = part == "unknown"
        assert list(res.index) == list(a.obs_names[q])
        assert res["pred_confidence"].between(0, 1).all()
        acc = (a.obs["pred_cell_type"].to_numpy()[q] == truth[q]).mean()
        assert acc > 0.9, (mode, acc)
        assert a.obs["pred_cell_type"][~q].isna().all()


def test_transfer_labels_bad_input(make_emb):
    a = make_emb(n=100, d=4)
    with pytest.raises(KeyError, match="label_key"):
        scb.transfer_labels(a, label_key="nope", use_rep="X_pca")
    with pytest.raises(ValueError, match="No query cells"):
        scb.transfer_labels(a, label_key="cell_type", use_rep="X_pca")
    with pytest.raises(KeyError, match="use_rep"):
        a.obs["p"] = np.where(np.arange(100) < 50, a.obs["cell_type"].astype(str), "unknown")
        scb.transfer_labels(a, label_key="p", use_rep="X_nope")


def test_tfidf_lsi_on_real_atac(shared_data):
    atac = ad.read_h5ad(shared_data / "signac_atac_small" / "atac_small_peaks.h5ad")
    T = scb.tfidf(atac.X)
    assert T.shape == atac.shape and np.isfinite(T.data).all()
    Z = scb.lsi(atac, n_components=10, n_iter=2)
    assert Z.shape == (100, 10) and "X_lsi" in atac.obsm
    # the first component (sequencing depth) is dropped: no remaining component is ~ depth
    depth = np.log1p(np.asarray(atac.X.sum(1)).ravel())
    assert max(abs(np.corrcoef(depth, Z[:, j])[0, 1]) for j in range(10)) < 0.9
    bad = atac.copy()
    bad.X = bad.X.astype(np.float32) * 0.5
    with pytest.raises(ValueError, match="integer counts"):
        scb.lsi(bad, n_components=5)


def test_rna_atac_coembedding_and_ot(shared_data):
    rna = ad.read_h5ad(shared_data / "liger_bmmc_rna_atac" / "bmmc_rna.h5ad")
    ga = ad.read_h5ad(shared_data / "liger_bmmc_rna_atac" / "bmmc_atac_gene_activity.h5ad")
    joint = scb.rna_atac_coembedding(rna, ga, n_pcs=20)
    assert joint.n_obs == rna.n_obs + ga.n_obs and joint.obsm["X_pca"].shape[1] == 20
    m = scb.integrate(joint, "rna", obsm_key="X_pca", batch_key="modality", max_iter=3)
    assert m["mix"] >= m["mix0"]


def test_run_scbiot_registry_entry(pbmc_prepared):
    a = pbmc_prepared[:250].copy()
    emb = scb.run_scbiot(a, "lane", output="ot", max_iter=1)
    assert emb.shape == (250, 30)
    assert "X_scbiot_ot" not in a.obsm  # the caller's AnnData is untouched


def test_integrate_on_lsi_and_on_a_model_latent(shared_data, pbmc_prepared):
    """Part A runs on an ATAC LSI and, as the second stage of a two-stage workflow, on a scVI latent."""
    import scvi

    atac = ad.read_h5ad(shared_data / "signac_atac_small" / "atac_small_peaks.h5ad")
    scb.lsi(atac, n_components=8, n_iter=1)
    atac.obs["batch"] = np.where(np.arange(atac.n_obs) % 2 == 0, "a", "b")
    m = scb.integrate(atac, "atac", batch_key="batch", max_iter=2)
    assert atac.obsm["X_scbiot_ot"].shape == (100, 8) and m["it"] >= 1

    a = pbmc_prepared[:200].copy()
    scvi.model.SCVI.setup_anndata(a, layer="counts", batch_key="lane")
    vae = scvi.model.SCVI(a, n_latent=10)
    vae.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    a.obsm["X_scvi"] = vae.get_latent_representation()
    m = scb.integrate_ot(a, "X_scvi", "lane", max_iter=2)
    assert a.obsm["X_scbiot_ot"].shape == (200, 10) and np.isfinite(a.obsm["X_scbiot_ot"]).all()
