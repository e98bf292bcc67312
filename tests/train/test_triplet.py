"""Triplet miner (property tests on random labels) and triplet loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from scvi_ext.train import mine_triplets, triplet_loss, unrank_pairs


def _random_labels(seed: int, n: int = 60):
    g = torch.Generator().manual_seed(seed)
    group = torch.randint(0, 3, (n,), generator=g)
    coarse = torch.randint(0, 4, (n,), generator=g)
    fine = torch.randint(0, 3, (n,), generator=g)
    z = torch.randn(n, 5, generator=g)
    return z, group, coarse, fine


@pytest.mark.parametrize("strategy", ["random", "hardest", "semihard", "sccraft"])
@pytest.mark.parametrize("seed", range(4))
def test_miner_respects_groups_and_labels(strategy, seed):
    z, group, coarse, fine = _random_labels(seed)
    a, p, n = mine_triplets(
        z,
        group[:, None].float(),
        coarse,
        strategy=strategy,
        fine_ids=fine,
        margin=1.0,
        generator=torch.Generator().manual_seed(seed),
    )
    assert a.dtype == torch.long and a.shape == p.shape == n.shape
    assert a.numel() > 0
    assert (group[a] == group[p]).all() and (group[a] == group[n]).all()  # never cross groups
    assert (coarse[a] == coarse[p]).all() and (coarse[a] != coarse[n]).all()
    assert (fine[a] == fine[p]).all()
    assert (a != p).all()
    if strategy != "sccraft":
        # every cell that has a valid positive and negative is an anchor, once
        same_g = group[:, None] == group[None, :]
        pos = same_g & (coarse[:, None] == coarse[None, :]) & (fine[:, None] == fine[None, :])
        pos.fill_diagonal_(False)
        neg = same_g & (coarse[:, None] != coarse[None, :])
        expected = torch.nonzero(pos.any(1) & neg.any(1))[:, 0]
        assert torch.equal(a, expected)


def test_hardest_and_semihard_choices():
    z, group, coarse, _ = _random_labels(7)
    a, p, n = mine_triplets(z, group, coarse, strategy="hardest")
    d = torch.cdist(z, z)
    for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist(), strict=True):
        same = group == group[ai]
        pos = same & (coarse == coarse[ai])
        pos[ai] = False
        negs = same & (coarse != coarse[ai])
        assert d[ai, pi] == d[ai][pos].max()
        assert d[ai, ni] == d[ai][negs].min()
    margin = 0.5
    a, p, n = mine_triplets(z, group, coarse, strategy="semihard", margin=margin)
    d_ap, d_an = d[a, p], d[a, n]
    in_window = (d_an > d_ap) & (d_an < d_ap + margin)
    for i in range(a.numel()):
        ai = a[i]
        negs = (group == group[ai]) & (coarse != coarse[ai])
        window = negs & (d[ai] > d_ap[i]) & (d[ai] < d_ap[i] + margin)
        if window.any():
            assert in_window[i] and d_an[i] == d[ai][window].min()
        else:
            assert d_an[i] == d[ai][negs].min()


def test_sccraft_counts_order_and_filter():
    z, group, coarse, fine = _random_labels(3, n=200)
    m = 5
    a, p, n = mine_triplets(
        None, group, coarse, strategy="sccraft", n_per_cluster=m, generator=torch.Generator().manual_seed(0)
    )
    assert (a < p).all()  # anchor = the earlier row of the pair
    keys = group[a] * 10 + coarse[a]
    assert torch.bincount(keys).max() <= m  # at most n_per_cluster per (group, coarse label)
    pairs = set(zip(a.tolist(), p.tolist(), strict=True))
    assert len(pairs) == a.numel()  # distinct pairs
    for key in keys.unique():  # distinct negatives within a (group, coarse) set
        assert n[keys == key].unique().numel() == (keys == key).sum()
    a2, p2, _ = mine_triplets(
        None,
        group,
        coarse,
        strategy="sccraft",
        fine_ids=fine,
        n_per_cluster=m,
        generator=torch.Generator().manual_seed(0),
    )
    assert (fine[a2] == fine[p2]).all() and a2.numel() < a.numel()
    # cluster-level negative sampling keeps the same relations
    a3, _, n3 = mine_triplets(None, group, coarse, strategy="sccraft", negative_sampling="cluster")
    assert (group[a3] == group[n3]).all() and (coarse[a3] != coarse[n3]).all()


def test_sccraft_empty_groups():
    # a group with a single label has no negatives; a label with one cell has no pairs
    group = torch.tensor([0, 0, 0, 1])
    coarse = torch.tensor([0, 0, 0, 1])
    a, p, n = mine_triplets(None, group, coarse, strategy="sccraft")
    assert a.numel() == 0
    loss = triplet_loss(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 3))
    assert float(loss) == 0.0


def test_unrank_pairs_matches_enumeration_and_sampling_is_uniform():
    for n in (2, 3, 7, 40):
        i, j = unrank_pairs(np.arange(n * (n - 1) // 2), n)
        assert list(zip(i.tolist(), j.tolist(), strict=True)) == list(itertools.combinations(range(n), 2))
    # draws of 3 pairs among the 10 pairs of a 5-cell cluster are uniform over pairs
    group = torch.zeros(8, dtype=torch.long)
    coarse = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    counts = np.zeros((5, 5))
    gen = torch.Generator().manual_seed(1)
    n_draws = 400
    for _ in range(n_draws):
        a, p, _ = mine_triplets(None, group, coarse, strategy="sccraft", n_per_cluster=3, generator=gen)
        keep = coarse[a] == 0
        for ai, pi in zip(a[keep].tolist(), p[keep].tolist(), strict=True):
            counts[ai, pi] += 1
    observed = counts[np.triu_indices(5, 1)]
    expected = n_draws * 3 / 10
    assert observed.sum() == n_draws * 3
    assert np.abs(observed - expected).max() < 5 * np.sqrt(expected)


def test_triplet_loss_hand_values_and_gradient():
    a = torch.zeros(2, 2)
    p = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    n = torch.tensor([[0.0, 1.0], [6.0, 8.0]])
    # d_ap = [5, 1], d_an = [1, 10] -> relu([5 - 1 + 1, 1 - 10 + 1]) = [5, 0]
    per = triplet_loss(a, p, n, margin=1.0, reduction="none")
    torch.testing.assert_close(per, torch.tensor([5.0, 0.0]))
    assert float(triplet_loss(a, p, n, margin=1.0)) == pytest.approx(2.5)
    assert float(triplet_loss(a, p, n, margin=1.0, reduction="sum")) == pytest.approx(5.0)
    # squared distances: [25 - 1 + 1, 1 - 100 + 1] -> [25, 0]
    assert float(triplet_loss(a, p, n, margin=1.0, squared=True)) == pytest.approx(12.5)
    # matches torch's TripletMarginLoss (eps aside)
    ref = torch.nn.TripletMarginLoss(margin=1.0, eps=0.0)(a, p, n)
    torch.testing.assert_close(triplet_loss(a, p, n, margin=1.0), ref)
    a = a.clone().requires_grad_(True)
    triplet_loss(a, p, n).backward()
    assert a.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same"):
        triplet_loss(a, p[:1], n)


def test_miner_bad_inputs():
    z = torch.randn(4, 2)
    with pytest.raises(ValueError, match="strategy"):
        mine_triplets(z, torch.zeros(4), torch.zeros(4), strategy="easy")
    with pytest.raises(ValueError, match="needs the latent"):
        mine_triplets(None, torch.zeros(4), torch.zeros(4), strategy="hardest")
    with pytest.raises(ValueError, match="margin"):
        mine_triplets(z, torch.zeros(4), torch.zeros(4), strategy="semihard")
    with pytest.raises(ValueError, match="positive_ids"):
        mine_triplets(z, torch.zeros(4), torch.zeros(3))
