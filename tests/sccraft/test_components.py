"""Sampler, pseudo-labels, triplet mining and losses of scCRAFT (no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import gammaln

from scvi_ext.sccraft import BalancedBatchSampler, SCCRAFTModule, cluster_pseudo_labels
from scvi_ext.train import mine_triplets


def test_sampler_draws_same_count_per_batch():
    codes = np.array([0] * 700 + [1] * 40 + [2] * 300)
    s = BalancedBatchSampler(codes, cells_per_batch=512, batch_size=1024, seed=3)
    assert len(s) == math.ceil(3 * 512 / 1024) == 2
    batches = list(s)
    assert [len(b) for b in batches] == [1024, 512]
    drawn = np.concatenate(batches)
    counts = np.bincount(codes[drawn], minlength=3)
    assert counts.tolist() == [512, 512, 512]
    per = {b: drawn[codes[drawn] == b] for b in range(3)}
    assert len(np.unique(per[0])) == 512  # n_b >= 512: without replacement
    assert len(np.unique(per[1])) <= 40  # small batch: with replacement
    assert len(np.unique(per[2])) < 512
    # reseeded per epoch: same epoch -> same draws, next epoch -> new draws
    s.set_epoch(0)
    first = np.concatenate(list(s))
    s.set_epoch(0)
    assert np.array_equal(first, np.concatenate(list(s)))
    assert not np.array_equal(first, np.concatenate(list(s)))


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="cells_per_batch"):
        BalancedBatchSampler(np.zeros(4), cells_per_batch=0)
    with pytest.raises(ValueError, match="empty"):
        BalancedBatchSampler(np.zeros(0))


def test_pseudo_labels_two_resolutions(pancreas_sccraft):
    ad = pancreas_sccraft
    lo, hi = ad.obs["leiden1"], ad.obs["leiden2"]
    assert lo.dtype.name == "category" and hi.dtype.name == "category"
    assert 2 <= lo.nunique() < hi.nunique()
    assert "neighbors" not in ad.uns  # worked on a copy
    assert ad.uns["sccraft_clustering"]["resolution_high"] == 7.0


def test_pseudo_labels_nested_and_errors(pancreas_sccraft):
    ad = pancreas_sccraft[:120].copy()
    cluster_pseudo_labels(ad, nested=True, key_low="lo", key_high="hi", flavor="igraph")
    # nested: every high-resolution cluster lies inside one low-resolution cluster
    assert (ad.obs.groupby("hi", observed=True)["lo"].nunique() == 1).all()
    with pytest.raises(ValueError, match="method"):
        cluster_pseudo_labels(ad, method="kmeans")
    with pytest.raises(ValueError, match="batch_key"):
        cluster_pseudo_labels(ad, per_batch=True)


def test_triplets_stay_within_batch_and_clusters(pancreas_sccraft):
    ad = pancreas_sccraft
    rng = np.random.default_rng(0)
    idx = rng.choice(ad.n_obs, size=300, replace=False)
    b = torch.as_tensor(ad.obs["sample"].cat.codes.to_numpy()[idx])
    lo = torch.as_tensor(ad.obs["leiden1"].cat.codes.to_numpy()[idx])
    hi = torch.as_tensor(ad.obs["leiden2"].cat.codes.to_numpy()[idx])
    a, p, n = mine_triplets(None, b, lo, fine_ids=hi, strategy="sccraft", n_per_cluster=15)
    assert a.numel() > 0
    assert bool((b[a] == b[p]).all() and (b[a] == b[n]).all())
    assert bool((lo[a] == lo[p]).all() and (hi[a] == hi[p]).all())
    assert bool((lo[a] != lo[n]).all())
    assert bool((a < p).all())  # anchor = earlier row
    groups = torch.stack([b[a], lo[a]], 1)
    assert torch.unique(groups, dim=0, return_counts=True)[1].max() <= 15


def test_nb_loss_reduction_and_clamp():
    torch.manual_seed(0)
    m = SCCRAFTModule(12, 2, n_latent=4, n_hidden_encoder=(8, 8), n_hidden_decoder=(8, 8))
    x = torch.rand(5, 12) * 3
    mu, theta = torch.rand(5, 12) + 0.5, torch.rand(5, 12) + 0.5
    qz_m, qz_v = torch.zeros(5, 4), torch.ones(5, 4)
    tensors = {"X": x, "batch": torch.zeros(5, 1)}
    out = m.loss(
        tensors,
        {"qz_m": qz_m, "qz_v": qz_v, "z": qz_m},
        {"px_mu": mu, "px_theta": theta},
        kl_weight=0.005,
        cos_weight=0.0,
        triplet_weight=0.0,
    )
    xn, mun, thn = (t.double().numpy() for t in (x, mu, theta))
    eps = 1e-8
    log_nb = (
        thn * (np.log(thn + eps) - np.log(thn + mun + eps))
        + xn * (np.log(mun + eps) - np.log(thn + mun + eps))
        + gammaln(xn + thn)
        - gammaln(thn)
        - gammaln(xn + 1)
    )
    assert float(out.loss) == pytest.approx(-log_nb.mean(), rel=1e-5)  # mean over cells x genes; KL = 0
    far = {"X": torch.full((5, 12), 1e6), "batch": torch.zeros(5, 1)}  # NLL ~ 7e7 before the clamp
    huge = m.loss(
        far,
        {"qz_m": qz_m, "qz_v": qz_v, "z": qz_m},
        {"px_mu": torch.full((5, 12), 1e-30), "px_theta": torch.ones(5, 12)},
        cos_weight=0.0,
        triplet_weight=0.0,
    )
    assert float(huge.extra_metrics["nb_nll"]) == pytest.approx(1e5)


def test_reference_sized_parameter_counts():
    m = SCCRAFTModule(2000, 2)
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert n(m.encoder) == 2_839_552
    assert n(m.decoder.px_mu) + n(m.decoder.px_theta) == 8_004_000
    assert n(m.discriminator) == 128 * 256 + 128 + 128 * 128 + 128 + 129 * 2
