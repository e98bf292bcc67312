"""``fix_reference`` (spec §6.4) and the paired two-view mode (spec §7.5) of scBIOT part A."""

from __future__ import annotations

import numpy as np
import pytest

import scvi_ext.scbiot as scb
from scvi_ext.scbiot._paired import prepare_view, ufgw_barycenter


def _codes(a, key):
    return a.obs[key].astype("category").cat.codes.to_numpy()


def _same_type_gap(E, b, ct, pairs=None):
    """Mean distance between the centroids of the same cell type in two batches (over types and batch pairs)."""
    bs = np.unique(b)
    pairs = pairs or [(i, j) for i in bs for j in bs if i < j]
    gaps = []
    for t in np.unique(ct):
        for i, j in pairs:
            gaps.append(np.linalg.norm(E[(b == i) & (ct == t)].mean(0) - E[(b == j) & (ct == t)].mean(0)))
    return float(np.mean(gaps))


# 25: the default prealign='auto' first translates the other batches onto the reference mean
@pytest.mark.parametrize(("shift", "max_gap_ratio"), [(2.0, 0.99), (25.0, 0.1)])
def test_fix_reference_keeps_reference_rows_bit_identical(make_emb, shift, max_gap_ratio):
    a = make_emb(n=600, d=10, shift=shift)
    X = a.obsm["X_pca"].astype(np.float32).copy()
    b, ct = _codes(a, "batch"), _codes(a, "cell_type")
    ref = b == 0
    m = scb.integrate_ot(a, "X_pca", "batch", reference="b0", fix_reference=True, max_iter=4)
    out = a.obsm["X_scbiot_ot"]
    assert m["fix_reference"] and m["it"] >= 1
    assert (
        m["prealign"] or m["mix"] > m["mix0"]
    )  # (after a pre-alignment mix0 is that of the pre-aligned input)
    assert np.array_equal(out[ref], X[ref])  # bit-identical, despite sharpening, smoothing and PostScale
    assert np.abs(out[~ref] - X[~ref]).max() > 0.1  # the query batches did move ...
    pairs = [(0, 1), (0, 2)]
    # ... towards the reference (same-type centroids of query and reference batches get closer)
    assert _same_type_gap(out, b, ct, pairs) < max_gap_ratio * _same_type_gap(X, b, ct, pairs)
    # without the option the same run moves the reference rows too (sharpening + PostScale), so the test bites
    a2 = make_emb(n=600, d=10, shift=shift)
    scb.integrate_ot(a2, "X_pca", "batch", reference="b0", max_iter=4)
    assert np.abs(a2.obsm["X_scbiot_ot"][ref] - X[ref]).max() > 1e-3


def test_fix_reference_with_labels_and_largest(make_emb):
    a = make_emb(n=450, d=8)
    labels = a.obs["cell_type"].astype(str).to_numpy().copy()
    labels[::4] = "unknown"
    a.obs["partial"] = labels
    X = a.obsm["X_pca"].astype(np.float32).copy()
    b = _codes(a, "batch")
    largest = int(np.bincount(b).argmax())
    scb.integrate(a, "supervised", batch_key="batch", label_key="partial", reference="largest",
                  fix_reference=True, max_iter=3)  # fmt: skip
    assert np.array_equal(a.obsm["X_scbiot_ot"][b == largest], X[b == largest])


def test_fix_reference_needs_a_single_reference(emb_adata):
    with pytest.raises(ValueError, match="fix_reference=True needs a single reference batch"):
        scb.integrate_ot(emb_adata, "X_pca", "batch", reference="union", fix_reference=True, max_iter=1)
    with pytest.raises(ValueError, match="fix_reference"):
        scb.integrate_ot(emb_adata, "X_pca", "batch", ot_mode="balanced", fix_reference=True, max_iter=1)


def _paired_adata(make_emb, seed=0, n=600):
    a = make_emb(n=n, d=10, n_batches=2, n_types=4, shift=2.0, seed=seed)
    ct = _codes(a, "cell_type")
    rng = np.random.default_rng(seed)
    W = np.abs(rng.normal(size=(4, 8)))
    # an LSI-like second view of the same cells: batch-free, cell-type specific, non-negative
    a.obsm["X_lsi"] = (W[ct] + 0.3 * np.abs(rng.normal(size=(n, 8)))).astype(np.float32)
    return a


def test_paired_preset_brings_same_type_cells_of_the_batches_together(make_emb):
    a = _paired_adata(make_emb)
    b, ct = _codes(a, "batch"), _codes(a, "cell_type")
    m = scb.integrate(a, "paired", batch_key="batch", max_iter=4, prealign="none")
    out = a.obsm["X_scbiot_ot"]
    Z = prepare_view("X_pca", a.obsm["X_pca"])  # the base view is z-scored (spec §2.13 preset paired)
    assert m["paired"] and out.shape == Z.shape and np.isfinite(out).all()
    assert m["mix"] > m["mix0"]
    assert _same_type_gap(out, b, ct) < 0.85 * _same_type_gap(Z, b, ct)
    # the second view enters the transport: a shuffled view 2 gives a different result
    a.obsm["X_lsi_shuffled"] = a.obsm["X_lsi"][np.random.default_rng(1).permutation(a.n_obs)]
    scb.integrate(a, "paired", batch_key="batch", max_iter=4, prealign="none",
                  view_keys=("X_pca", "X_lsi_shuffled"), out_key="shuf")  # fmt: skip
    assert not np.allclose(a.obsm["shuf"], out)


def test_paired_fix_reference(make_emb):
    a = _paired_adata(make_emb, n=300)
    b = _codes(a, "batch")
    Z = prepare_view("X_pca", a.obsm["X_pca"])
    scb.integrate(a, "paired", batch_key="batch", max_iter=3, reference="b1", fix_reference=True)
    assert np.array_equal(a.obsm["X_scbiot_ot"][b == 1], Z[b == 1])


def test_ufgw_barycenter_fixed_point_and_paired_rows():
    rng = np.random.default_rng(0)
    B = rng.normal(size=(10, 3)) * 3
    V = np.abs(rng.normal(size=(10, 5)))
    # two batches with the same prototypes: at a small epsilon the barycentre stays there and each prototype
    # maps onto itself (its paired view-2 row follows it)
    R1, R2, plans = ufgw_barycenter([B, B], [V, V], B, V, reg=0.002, reg_m=0.4, cost_clip_q=0.9, cosine2=True)
    assert R1.shape == B.shape and R2.shape == V.shape and len(plans) == 2
    img = plans[0] @ R1 / plans[0].sum(1, keepdims=True)
    np.testing.assert_allclose(img, B, atol=1e-2)
    np.testing.assert_allclose(R2, V, atol=1e-2)
    assert (plans[0].argmax(1) == np.arange(10)).all()


def test_paired_bad_input(make_emb):
    a = _paired_adata(make_emb, n=200)
    with pytest.raises(ValueError, match="view_keys must be two obsm keys including obsm_key"):
        scb.integrate_ot(a, "X_pca", "batch", view_keys=("X_lsi", "X_other"), max_iter=1)
    with pytest.raises(ValueError, match="two different"):
        scb.integrate_ot(a, "X_pca", "batch", view_keys=("X_pca", "X_pca"), max_iter=1)
    with pytest.raises(KeyError, match="X_missing"):
        scb.integrate_ot(a, "X_pca", "batch", view_keys=("X_pca", "X_missing"), max_iter=1)
    a.obsm["X_lsi"][0, 0] = np.nan
    with pytest.raises(ValueError, match="X_lsi"):
        scb.integrate(a, "paired", batch_key="batch", max_iter=1)
