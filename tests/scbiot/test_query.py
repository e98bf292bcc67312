"""SCBIOT query mapping from counts: the stored PCA / LSI projection and the OT displacement of the reference."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import scvi_ext.scbiot as scb
from scvi_ext.neighbors import knn

_SMALL = {"ffn_factor": 4, "n_prototypes": 16}
_TRAIN = {"max_epochs": 2, "batch_size": 256, "enable_progress_bar": False, "accelerator": "cpu"}


def _knn_accuracy(ref: np.ndarray, ref_labels: np.ndarray, query: np.ndarray, truth: np.ndarray) -> float:
    idx, _ = knn(ref.astype(np.float32), query.astype(np.float32), k=15)
    votes = ref_labels[idx]
    pred = np.array([max(set(r), key=list(r).count) for r in votes])
    return float((pred == truth).mean())


@pytest.fixture(scope="module")
def ref_query(pbmc_counts):
    """pbmc68k: 3/4 of the cells are the reference (prepare -> OT -> SCBIOT, 2 epochs); 1/4 the query (counts)."""
    from scvi_ext.methods import prepare

    held = np.arange(pbmc_counts.n_obs) % 4 == 0
    ref = prepare(pbmc_counts[~held].copy(), "lane")
    scb.integrate(ref, "rna", obsm_key="X_pca", batch_key="lane", max_iter=2)
    scb.pseudo_labels(ref, "X_scbiot_ot", resolution=0.5)
    qmap = scb.build_query_map(ref)
    assert qmap["kind"] == "pca" and len(qmap["features"]) == ref.n_vars
    scb.SCBIOT.setup_anndata(ref, "X_scbiot_ot", "lane", pseudo_label_key="leiden_scbiot_ot")
    model = scb.SCBIOT(ref, **_SMALL)
    model.train(**_TRAIN)
    query = pbmc_counts[held].copy()
    return model, ref, query


def test_query_projection_reproduces_reference_pca(ref_query, pbmc_counts):
    model, ref, _ = ref_query
    assert model.query_map_ is not None and model.query_map_["ref_input"].shape == ref.obsm["X_pca"].shape
    # the reference's own cells given as counts land on their own PCA coordinates
    own = pbmc_counts[ref.obs_names].copy()
    X_ot = scb.project_query(own, model.query_map_, batch_key="lane")
    np.testing.assert_allclose(own.obsm["X_pca"], ref.obsm["X_pca"], atol=2e-3)
    # ... and nearer their own OT coordinates than the PCA is (the displacement is a neighbourhood average: the
    # per-cell part of the OT shift, e.g. the sharpening field, is smoothed out)
    err = np.linalg.norm(X_ot - ref.obsm["X_scbiot_ot"], axis=1).mean()
    moved = np.linalg.norm(ref.obsm["X_scbiot_ot"] - ref.obsm["X_pca"], axis=1).mean()
    assert err < 0.8 * moved


def test_query_from_counts_maps_into_reference_space(ref_query, tmp_path):
    model, ref, query = ref_query
    Z_ref = model.get_latent_representation(n_components=20)
    assert "X_scbiot_ot" not in query.obsm
    q = scb.SCBIOT.load_query_data(query, model)
    assert {"X_pca", "X_scbiot_ot"} <= set(query.obsm)
    Zq = q.get_latent_representation(n_components=20)
    assert Zq.shape == (query.n_obs, 20) and np.isfinite(Zq).all()
    # the reference latent is unchanged
    np.testing.assert_array_equal(model.get_latent_representation(n_components=20), Z_ref)
    # query cells embed into the reference's space: kNN label transfer is about as good as within the reference
    labels = ref.obs["bulk_labels"].astype(str).to_numpy()
    truth = query.obs["bulk_labels"].astype(str).to_numpy()
    acc_query = _knn_accuracy(Z_ref, labels, Zq, truth)
    idx, _ = knn(Z_ref, k=15)  # leave-one-out kNN accuracy inside the reference latent
    acc_ref = float(
        np.mean([max(set(r), key=list(r).count) == t for r, t in zip(labels[idx], labels, strict=True)])
    )
    acc_ot = _knn_accuracy(ref.obsm["X_scbiot_ot"], labels, query.obsm["X_scbiot_ot"], truth)
    acc_pca = _knn_accuracy(ref.obsm["X_pca"], labels, query.obsm["X_pca"], truth)
    assert acc_query > acc_ref - 0.05 and acc_ot > acc_pca - 0.05, (acc_query, acc_ref, acc_ot, acc_pca)
    # no refitting: a query model cannot be trained
    with pytest.raises(ValueError, match="Nothing to train"):
        q.train(max_epochs=1)
    # the map is saved with the model: a saved reference gives the same query latent
    model.save(tmp_path / "ref", overwrite=True, save_anndata=True)
    q2 = scb.SCBIOT.load_query_data(query.copy(), str(tmp_path / "ref"))
    np.testing.assert_allclose(q2.get_latent_representation(n_components=20), Zq, atol=1e-5)


def test_query_map_bad_input(ref_query):
    model, ref, query = ref_query
    bare = ref.copy()
    del bare.varm["PCs"]
    with pytest.raises(KeyError, match="PCs"):
        scb.build_query_map(bare)
    with pytest.raises(KeyError, match="X_nope"):
        scb.build_query_map(ref, "X_nope")
    shuffled = ref.copy()
    shuffled.obsm["X_pca"] = shuffled.obsm["X_pca"][::-1].copy()
    with pytest.raises(ValueError, match="not \\(X - mean"):
        scb.build_query_map(shuffled)
    other = query.copy()
    other.var_names = [f"x{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match="none of the reference's features"):
        scb.project_query(other, model.query_map_)
    no_map = ref.copy()
    del no_map.uns["scbiot_query_map"]
    scb.SCBIOT.setup_anndata(no_map, "X_scbiot_ot", "lane", pseudo_label_key="leiden_scbiot_ot")
    m2 = scb.SCBIOT(no_map, **_SMALL)
    assert m2.query_map_ is None
    m2.is_trained_ = True
    bare_query = ad.AnnData(query.X.copy(), obs=query.obs.copy(), var=query.var.copy())
    with pytest.raises(KeyError, match="query map"):
        scb.SCBIOT.load_query_data(bare_query, m2)


def test_lsi_query_projection(shared_data):
    atac = ad.read_h5ad(shared_data / "signac_atac_small" / "atac_small_peaks.h5ad")
    scb.lsi(atac, n_components=10, n_iter=2)
    atac.obsm["X_ot"] = atac.obsm["X_lsi"] + 0.5  # a stand-in OT output: a uniform shift
    qmap = scb.build_query_map(atac, "X_lsi", "X_ot")
    assert qmap["kind"] == "lsi"
    full = {**qmap, "ref_input": atac.obsm["X_lsi"], "ref_shift": atac.obsm["X_ot"] - atac.obsm["X_lsi"]}
    q = atac[::3].copy()
    del q.obsm["X_lsi"], q.obsm["X_ot"]
    X_ot = scb.project_query(q, full)
    np.testing.assert_allclose(q.obsm["X_lsi"], atac.obsm["X_lsi"][::3], atol=1e-3)
    np.testing.assert_allclose(X_ot, atac.obsm["X_ot"][::3], atol=1e-3)


def test_bridge_maps_scbiot_query(pbmc_counts, tmp_path):
    """The path the R package's MapQueryScviExt takes (integrate_anndata with model_dir, map_query_anndata)."""
    from scvi_ext.interop import integrate_anndata, map_query_anndata

    held = np.arange(pbmc_counts.n_obs) % 4 == 0
    ref, query = pbmc_counts[~held].copy(), pbmc_counts[held].copy()
    emb, _, _ = integrate_anndata(
        ref,
        "scbiot",
        "lane",
        max_epochs=2,
        model_dir=str(tmp_path),
        labels_key="bulk_labels",
        progress_bar=False,
        n_threads=1,
        accelerator="cpu",
        method_kwargs=_SMALL,
    )
    out, cells, labels, conf, _ = map_query_anndata(
        query,
        str(tmp_path),
        batch_key="lane",
        max_epochs=1,
        progress_bar=False,
        n_threads=1,
        accelerator="cpu",
    )
    assert out.shape == (query.n_obs, emb.shape[1]) and np.isfinite(out).all()
    assert list(cells) == list(query.obs_names)
    acc = np.mean(np.asarray(labels) == query.obs["bulk_labels"].astype(str).to_numpy())
    majority = query.obs["bulk_labels"].value_counts(normalize=True).max()
    assert acc > majority and all(0 < c <= 1 for c in conf)
