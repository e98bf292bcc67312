"""The Python side of the R bridge: plain-vector transport, registry and model paths, query mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from scvi_ext.interop import (
    FILES,
    SUITE_METHODS,
    anndata_from_r,
    get_model_class,
    integrate_from_r,
    map_query_from_r,
    read_model_info,
    sparse_from_r,
    transfer_labels,
)


def _payload(adata, cells=None):
    """What the R package sends: the genes x cells dgCMatrix slots as plain lists."""
    ad = adata if cells is None else adata[cells]
    csc = sp.csc_matrix(sp.csr_matrix(ad.X).T)  # genes x cells
    return {"i": csc.indices.tolist(), "p": csc.indptr.tolist(), "x": csc.data.astype(float).tolist(),
            "dims": list(csc.shape), "genes": list(ad.var_names), "cells": list(ad.obs_names)}


@pytest.fixture(scope="module")
def small(pancreas_counts):
    ad = pancreas_counts[:, np.asarray((pancreas_counts.X > 0).sum(0)).ravel() >= 20].copy()
    return ad[:, :300].copy()


def test_sparse_from_r_matches_dense():
    rng = np.random.default_rng(0)
    dense = rng.poisson(0.5, size=(7, 5)).astype(float)  # genes x cells
    csc = sp.csc_matrix(dense)
    m = sparse_from_r(csc.indices.tolist(), csc.indptr.tolist(), csc.data.tolist(), [7, 5])
    np.testing.assert_array_equal(m.toarray(), dense.T)
    # reticulate passes length-1 vectors as scalars
    one = sparse_from_r(0, [0, 1], 2.0, [1, 1])
    assert one.toarray().tolist() == [[2.0]]
    with pytest.raises(ValueError, match="inconsistent dgCMatrix slots"):
        sparse_from_r([0], [0, 1, 1], [1.0], [1, 3])


def test_anndata_from_r_keeps_names_and_types(small):
    ad = anndata_from_r(_payload(small), {"sample": list(small.obs["sample"].astype(str)),
                                          "depth": np.asarray(small.X.sum(1)).ravel().tolist()})
    assert list(ad.obs_names) == list(small.obs_names)
    assert list(ad.var_names) == list(small.var_names)
    assert ad.obs["sample"].dtype == "category"
    assert ad.obs["depth"].dtype == np.float64
    np.testing.assert_array_equal(ad.X.toarray(), small.X.toarray())
    with pytest.raises(ValueError, match="has 2 values"):
        anndata_from_r(_payload(small), {"b": ["x", "y"]})


@pytest.mark.parametrize("method", ["pca", "harmony"])
def test_registry_path_returns_flat_column_major(small, method):
    obs = {"sample": list(small.obs["sample"].astype(str))}
    out = integrate_from_r(_payload(small), obs, method, "sample", progress_bar=False)
    n, d = out["dims"]
    assert (n, d) == (small.n_obs, 30)
    assert out["cells"] == list(small.obs_names)
    assert isinstance(out["embedding"], list) and not isinstance(out["embedding"][0], np.ndarray)
    emb = np.asarray(out["embedding"]).reshape((n, d), order="F")
    assert np.isfinite(emb).all()
    assert out["info"]["path"] == "registry"


def test_bad_inputs(small):
    obs = {"sample": list(small.obs["sample"].astype(str))}
    with pytest.raises(ValueError, match="not available"):
        integrate_from_r(_payload(small), obs, "no_such_method", "sample")
    with pytest.raises(ValueError, match="models raw counts"):
        integrate_from_r(_payload(small), obs, "scvi", "sample", layer="data")
    with pytest.raises(KeyError, match="batch_key='nope'"):
        integrate_from_r(_payload(small), obs, "pca", "nope")
    with pytest.raises(ValueError, match="no trainable scvi-tools model"):
        integrate_from_r(_payload(small), obs, "harmony", "sample", model_dir="unused")
    with pytest.raises(FileNotFoundError, match="RunScviExt"):
        read_model_info("/nonexistent")


def test_model_table():
    assert get_model_class("scvi").__name__ == "SCVI"
    assert get_model_class("harmony") is None
    with pytest.raises(ValueError, match="no trainable"):
        get_model_class("harmony", required=True)
    assert set(SUITE_METHODS) == {"piano", "sysvi", "sccraft", "uniport", "scbiot"}


def test_transfer_labels_matches_brute_force():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(60, 3))
    labels = np.where(ref[:, 0] > 0, "pos", "neg")
    query = rng.normal(size=(20, 3))
    pred, conf = transfer_labels(ref, labels, query, k=5)
    d = ((query[:, None, :] - ref[None]) ** 2).sum(-1)
    for j in range(len(query)):
        nn = labels[np.argsort(d[j])[:5]]
        vals, counts = np.unique(nn, return_counts=True)
        assert pred[j] == vals[np.argmax(counts)]
        assert conf[j] == pytest.approx(counts.max() / 5)


def test_scvi_model_saved_and_query_mapped(small, tmp_path):
    rng = np.random.default_rng(0)
    query_cells = rng.random(small.n_obs) < 0.25
    ref, query = small[~query_cells].copy(), small[query_cells].copy()
    obs = {"sample": list(ref.obs["sample"].astype(str)), "cell_type": list(ref.obs["cell_type"].astype(str))}
    out = integrate_from_r(_payload(ref), obs, "scvi", "sample", max_epochs=2, model_dir=str(tmp_path),
                           labels_key="cell_type", progress_bar=False, n_threads=1,
                           method_kwargs={"n_latent": 5})
    assert out["dims"] == [ref.n_obs, 5]
    side = json.loads((tmp_path / FILES.SIDECAR).read_text())
    assert side["method"] == "scvi" and side["labels_key"] == "cell_type"
    assert (tmp_path / FILES.REFERENCE_LATENT).is_file()
    # drop a few genes from the query: they are padded with zeros (with a warning)
    q = query[:, 10:].copy()
    with pytest.warns(UserWarning, match="lacks 10"):
        res = map_query_from_r(_payload(q), {"sample": list(q.obs["sample"].astype(str))}, str(tmp_path),
                               batch_key="sample", max_epochs=1, progress_bar=False)
    assert res["dims"] == [q.n_obs, 5]
    assert res["cells"] == list(q.obs_names)
    assert set(res["labels"]) <= set(ref.obs["cell_type"].astype(str))
    assert all(0 < c <= 1 for c in res["confidence"])
    # the shared latent space carries cell identity: transferred labels beat the majority-class rate
    acc = np.mean(np.asarray(res["labels"]) == q.obs["cell_type"].astype(str).to_numpy())
    majority = q.obs["cell_type"].value_counts(normalize=True).max()
    assert acc > majority


@pytest.mark.parametrize("method", ["piano", "sysvi", "sccraft", "uniport"])
def test_suite_models_map_queries_through_the_bridge(small, tmp_path, method):
    """MapQueryScviExt's path for each suite model: save with model_dir, then map held-out cells (1 epoch)."""
    import warnings

    from scvi_ext.interop import integrate_anndata, map_query_anndata

    query_cells = np.arange(small.n_obs) % 4 == 0
    ref, query = small[~query_cells].copy(), small[query_cells].copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb, _, _ = integrate_anndata(ref, method, "sample", max_epochs=1, model_dir=str(tmp_path),
                                      labels_key="cell_type", progress_bar=False, n_threads=1, accelerator="cpu")
        out, cells, labels, conf, _ = map_query_anndata(query, str(tmp_path), batch_key="sample", max_epochs=1,
                                                        progress_bar=False, n_threads=1, accelerator="cpu")
    # each model gets the input it models (counts for PIANO, log-normalised X for SysVI / scCRAFT / uniPort)
    assert not [w for w in caught if "looks like raw counts" in str(w.message)]
    assert out.shape == (query.n_obs, emb.shape[1]) and np.isfinite(out).all()
    assert list(cells) == list(query.obs_names)
    assert len(labels) == query.n_obs and all(0 < c <= 1 for c in conf)
