"""Fast metrics: brute-force references on tiny inputs, synthetic sanity checks, scib-metrics cross-checks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from scvi_ext.metrics import (
    batch_entropy,
    batch_silhouette,
    fast_scores,
    ilisi_knn,
    knn_label_accuracy,
    knn_transfer_accuracy,
    label_silhouette,
)
from scvi_ext.metrics._fast import DEFAULT_K, FAST_SCORE_KEYS, TRANSFER_KEYS


# ---------------------------------------------------------------------------------------------------------
# slow, obviously-correct references (python loops over cells, full distance matrices)
# ---------------------------------------------------------------------------------------------------------
def brute_neighbors(X, k, query=None):
    """Sorted neighbour lists (self excluded when ``query is None``) and their Euclidean distances."""
    Q = X if query is None else query
    d = np.sqrt(((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    if query is None:
        np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


def brute_entropy(X, batch, k):
    nbrs, _ = brute_neighbors(X, k)
    n_batches = len(set(batch.tolist()))
    scores = []
    for row in nbrs:
        counts = Counter(batch[j] for j in row)
        scores.append(-sum(c / k * np.log(c / k) for c in counts.values()) / np.log(n_batches))
    return float(np.mean(scores))


def brute_lisi_weights(d, perplexity, tol=1e-5, max_iter=50):
    """Harmony's per-cell binary search (``compute_simpson_index``), written for one cell at a time."""
    beta, betamin, betamax = 1.0, -np.inf, np.inf

    def hbeta(beta):
        p = np.exp(-d * beta)
        h = np.log(p.sum()) + beta * np.sum(d * p) / p.sum()
        return h, p / p.sum()

    h, p = hbeta(beta)
    h_diff = h - np.log(perplexity)
    tries = 0
    while abs(h_diff) >= tol and tries < max_iter:
        if h_diff > 0:
            betamin = beta
            beta = beta * 2 if betamax == np.inf else (beta + betamax) / 2
        else:
            betamax = beta
            beta = beta / 2 if betamin == -np.inf else (beta + betamin) / 2
        h, p = hbeta(beta)
        h_diff = h - np.log(perplexity)
        tries += 1
    return p


def brute_ilisi(X, batch, k, perplexity=None):
    nbrs, dists = brute_neighbors(X, k)
    batches = sorted(set(batch.tolist()))
    lisi = []
    for row, d in zip(nbrs, dists, strict=True):
        w = np.full(k, 1.0 / k) if perplexity is None else brute_lisi_weights(d, perplexity)
        simpson = sum(sum(w[m] for m, j in enumerate(row) if batch[j] == b) ** 2 for b in batches)
        lisi.append(1.0 / simpson)
    return (np.median(lisi) - 1) / (len(batches) - 1)


def brute_vote(neighbor_labels):
    """Majority label; a tie goes to the tied label that appears first (nearest)."""
    counts = Counter(neighbor_labels)
    best = max(counts.values())
    return next(lab for lab in neighbor_labels if counts[lab] == best)


def brute_label_accuracy(X, labels, k):
    nbrs, _ = brute_neighbors(X, k)
    return float(np.mean([brute_vote([labels[j] for j in row]) == labels[i] for i, row in enumerate(nbrs)]))


def brute_macro_f1(y_true, y_pred):
    f1s = []
    for lab in sorted(set(y_true) | set(y_pred)):
        tp = sum(t == lab and p == lab for t, p in zip(y_true, y_pred, strict=True))
        fp = sum(t != lab and p == lab for t, p in zip(y_true, y_pred, strict=True))
        fn = sum(t == lab and p != lab for t, p in zip(y_true, y_pred, strict=True))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def brute_silhouette(X, labels):
    d = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    s = np.zeros(len(X))
    for i in range(len(X)):
        own = (labels == labels[i]) & (np.arange(len(X)) != i)
        if not own.any():
            continue  # singleton cluster: 0 (sklearn's convention)
        a = d[i, own].mean()
        b = min(d[i, labels == other].mean() for other in set(labels.tolist()) - {labels[i]})
        s[i] = (b - a) / max(a, b)
    return s


# ---------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(40, 3))
    batch = rng.choice(np.array(["b0", "b1", "b2"]), 40)
    labels = rng.choice(np.array(["t0", "t1", "t2", "t3"]), 40)
    X[:, 0] += 0.8 * (labels == "t1") + 0.5 * (batch == "b2")
    return X, batch, labels


def blobs(n_per, n_batches, shift_batches, n_labels=3, seed=0, sep=12.0):
    """Gaussian blobs, one per label; batches either interleaved (shift 0) or moved far apart."""
    rng = np.random.default_rng(seed)
    n = n_per * n_labels
    labels = np.repeat(np.arange(n_labels), n_per)
    batch = rng.integers(0, n_batches, n)
    X = rng.normal(size=(n, 5))
    X[:, 0] += labels * sep
    X[:, 1] += batch * shift_batches
    return X, batch, labels


# ---------------------------------------------------------------------------------------------------------
# brute-force agreement on tiny inputs
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 5, 12])
def test_batch_entropy_matches_brute_force(tiny, k):
    X, batch, _ = tiny
    assert batch_entropy(X, batch, k=k) == pytest.approx(brute_entropy(X, batch, k), abs=1e-12)
    raw = batch_entropy(X, batch, k=k, normalize=False)
    assert raw == pytest.approx(brute_entropy(X, batch, k) * np.log(3), abs=1e-12)


@pytest.mark.parametrize(("k", "perplexity"), [(6, None), (13, None), (12, 4.0), (20, 6.5)])
def test_ilisi_matches_brute_force(tiny, k, perplexity):
    X, batch, _ = tiny
    ours = ilisi_knn(X, batch, k=k, perplexity=perplexity)
    assert ours == pytest.approx(brute_ilisi(X, batch, k, perplexity), abs=1e-6)
    assert 0.0 <= ours <= 1.0


@pytest.mark.parametrize("k", [1, 4, 9])
def test_knn_label_accuracy_matches_brute_force(tiny, k):
    X, _, labels = tiny
    assert knn_label_accuracy(X, labels, k=k) == pytest.approx(brute_label_accuracy(X, labels, k), abs=1e-12)


def test_vote_tie_goes_to_nearest_label():
    # cell 0's two neighbours: "b" at distance 1, "a" at distance 2 -> tie 1:1 -> "b"
    X = np.array([[0.0], [1.0], [-2.0], [10.0], [11.0]])
    labels = np.array(["a", "b", "a", "c", "c"])
    assert brute_vote(["b", "a"]) == "b"
    expected = brute_label_accuracy(X, labels, 2)
    assert knn_label_accuracy(X, labels, k=2) == pytest.approx(expected)


def test_knn_transfer_accuracy_matches_brute_force(tiny):
    X, _, labels = tiny
    ref, query = X[:28], X[28:] + 0.05
    y_ref, y_query = labels[:28], labels[28:].copy()
    y_query[0] = "unseen"  # a label the reference cannot predict
    k = 5
    nbrs, _ = brute_neighbors(ref, k, query=query)
    pred = [brute_vote([y_ref[j] for j in row]) for row in nbrs]
    out = knn_transfer_accuracy(ref, y_ref, query, y_query, k=k)
    assert set(out) == set(TRANSFER_KEYS)
    assert out["accuracy"] == pytest.approx(np.mean(np.array(pred) == y_query))
    assert out["macro_f1"] == pytest.approx(brute_macro_f1(list(y_query), pred))


def test_silhouettes_match_brute_force(tiny):
    X, batch, labels = tiny
    assert label_silhouette(X, labels) == pytest.approx(
        (brute_silhouette(X, labels).mean() + 1) / 2, abs=1e-10
    )
    per_label = []
    for lab in np.unique(labels):
        m = labels == lab
        if len(np.unique(batch[m])) in (1, m.sum()):
            continue
        per_label.append(np.mean(1 - np.abs(brute_silhouette(X[m], batch[m]))))
    assert batch_silhouette(X, batch, labels) == pytest.approx(np.mean(per_label), abs=1e-10)


def test_fast_scores_equals_individual_functions(tiny):
    X, batch, labels = tiny
    scores = fast_scores(X, batch, labels, k=8, perplexity=3.0)
    assert set(scores) == set(FAST_SCORE_KEYS)
    assert scores[FAST_SCORE_KEYS.BATCH_ENTROPY] == pytest.approx(batch_entropy(X, batch, k=8))
    assert scores[FAST_SCORE_KEYS.ILISI] == pytest.approx(ilisi_knn(X, batch, k=8, perplexity=3.0))
    assert scores[FAST_SCORE_KEYS.KNN_LABEL_ACCURACY] == pytest.approx(knn_label_accuracy(X, labels, k=8))
    assert scores[FAST_SCORE_KEYS.LABEL_SILHOUETTE] == pytest.approx(label_silhouette(X, labels))
    assert scores[FAST_SCORE_KEYS.BATCH_SILHOUETTE] == pytest.approx(batch_silhouette(X, batch, labels))
    # default k: each metric's own default (clipped to n - 1 = 39 for the entropy)
    default = fast_scores(X, batch, labels, silhouettes=False)
    assert set(default) == {
        FAST_SCORE_KEYS.BATCH_ENTROPY,
        FAST_SCORE_KEYS.ILISI,
        FAST_SCORE_KEYS.KNN_LABEL_ACCURACY,
    }
    assert default[FAST_SCORE_KEYS.BATCH_ENTROPY] == pytest.approx(batch_entropy(X, batch))
    assert default[FAST_SCORE_KEYS.ILISI] == pytest.approx(ilisi_knn(X, batch, k=DEFAULT_K.ILISI))
    assert default[FAST_SCORE_KEYS.KNN_LABEL_ACCURACY] == pytest.approx(knn_label_accuracy(X, labels))


def test_inputs_as_torch_lists_and_categoricals(tiny):
    torch = pytest.importorskip("torch")
    import pandas as pd

    X, batch, labels = tiny
    ref = batch_entropy(X, batch, k=5)
    assert batch_entropy(torch.from_numpy(X), list(batch), k=5) == pytest.approx(ref)
    cat = pd.Categorical(batch, categories=["b2", "b1", "b0", "unused"])
    assert batch_entropy(X, cat, k=5) == pytest.approx(ref)  # unused categories do not count as batches
    assert ilisi_knn(X, pd.Series(batch), k=5) == pytest.approx(ilisi_knn(X, batch, k=5))


# ---------------------------------------------------------------------------------------------------------
# synthetic sanity
# ---------------------------------------------------------------------------------------------------------
def test_mixed_batches_score_high_separated_low():
    mixed = blobs(150, 3, shift_batches=0.0)
    separated = blobs(150, 3, shift_batches=60.0)
    X, batch, labels = mixed
    assert batch_entropy(X, batch, k=30) > 0.9
    assert ilisi_knn(X, batch, k=30) > 0.8
    # ~10 effective neighbours drawn at random from 3 batches: expected inverse Simpson ~2.5, not 3
    assert ilisi_knn(X, batch, k=30, perplexity=10) > 0.5
    assert batch_silhouette(X, batch, labels) > 0.9
    X, batch, labels = separated
    assert batch_entropy(X, batch, k=30) < 0.05
    assert ilisi_knn(X, batch, k=30) < 0.05
    assert ilisi_knn(X, batch, k=30, perplexity=10) < 0.05
    assert batch_silhouette(X, batch, labels) < 0.3


def test_separated_labels_score_high():
    X, batch, labels = blobs(100, 2, shift_batches=0.0)
    assert label_silhouette(X, labels) > 0.85
    assert knn_label_accuracy(X, labels) == 1.0
    scores = fast_scores(X, batch, labels)
    assert scores[FAST_SCORE_KEYS.KNN_LABEL_ACCURACY] == 1.0
    assert scores[FAST_SCORE_KEYS.LABEL_SILHOUETTE] > 0.85
    # shuffled labels: chance level
    shuffled = np.random.default_rng(0).permutation(labels)
    assert label_silhouette(X, shuffled) < 0.55
    assert knn_label_accuracy(X, shuffled) < 0.6
    half = len(X) // 2
    order = np.random.default_rng(1).permutation(len(X))
    out = knn_transfer_accuracy(X[order[:half]], labels[order[:half]], X[order[half:]], labels[order[half:]])
    assert out == {"accuracy": 1.0, "macro_f1": 1.0}


# ---------------------------------------------------------------------------------------------------------
# scib-metrics cross-checks
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moderate():
    rng = np.random.default_rng(11)
    n = 500
    batch = rng.integers(0, 3, n)
    labels = rng.integers(0, 4, n)
    X = rng.normal(size=(n, 8))
    X[:, 0] += 1.5 * batch
    X[:, 1] += 3.0 * labels
    return X, batch, labels


def test_ilisi_agrees_with_scib_metrics(moderate):
    scib_metrics = pytest.importorskip("scib_metrics")
    from scib_metrics.nearest_neighbors import NeighborsResults

    from scvi_ext.neighbors import knn

    X, batch, _ = moderate
    # scib's benchmark setting: 90 neighbours *including* the cell (masked out), perplexity 90 // 3 = 30
    idx, dist = knn(X, k=90, exclude_self=False)
    theirs = float(scib_metrics.ilisi_knn(NeighborsResults(indices=idx, distances=dist), batch))
    ours = ilisi_knn(X, batch, k=89, perplexity=30)
    assert 0.2 < theirs < 0.8  # a partly mixed case, not a trivial extreme
    assert ours == pytest.approx(theirs, abs=1e-3)


def test_silhouettes_agree_with_scib_metrics(moderate):
    scib_metrics = pytest.importorskip("scib_metrics")
    X, batch, labels = moderate
    assert label_silhouette(X, labels) == pytest.approx(
        float(scib_metrics.silhouette_label(X, labels)), abs=1e-5
    )
    assert batch_silhouette(X, batch, labels) == pytest.approx(
        float(scib_metrics.silhouette_batch(X, labels, batch)), abs=1e-5
    )


# ---------------------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_naming_the_argument(tiny):
    X, batch, labels = tiny
    with pytest.raises(ValueError, match="`batch` has 39 values"):
        batch_entropy(X, batch[:-1])
    with pytest.raises(ValueError, match="`labels` has 39 values"):
        knn_label_accuracy(X, labels[:-1])
    with pytest.raises(ValueError, match="`batch` has 1 distinct"):
        ilisi_knn(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="`batch` has 1 distinct"):
        fast_scores(X, np.zeros(len(X)), labels)
    with pytest.raises(ValueError, match="`batch` has 1 distinct"):
        batch_silhouette(X, np.zeros(len(X)), labels)
    bad = X.copy()
    bad[0, 0] = np.nan
    for fn in (lambda: batch_entropy(bad, batch), lambda: label_silhouette(bad, labels)):
        with pytest.raises(ValueError, match="`X` contains 1 NaN"):
            fn()
    with pytest.raises(ValueError, match="`X_query` contains 1 NaN"):
        knn_transfer_accuracy(X, labels, bad, labels)
    nan_labels = labels.astype(object)
    nan_labels[3] = None
    with pytest.raises(ValueError, match="`labels` has 1 missing"):
        knn_label_accuracy(X, nan_labels)
    with pytest.raises(ValueError, match="`labels` has 1 distinct"):
        label_silhouette(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        batch_entropy(X, batch, k=0)
    with pytest.raises(ValueError, match="perplexity"):
        ilisi_knn(X, batch, k=10, perplexity=20)
    with pytest.raises(ValueError, match="perplexity"):
        ilisi_knn(X, batch, perplexity=-1.0)
    with pytest.raises(ValueError, match="`y_query` has 3 values"):
        knn_transfer_accuracy(X, labels, X[:5], labels[:3])
    with pytest.raises(ValueError, match="dimensions"):
        knn_transfer_accuracy(X, labels, X[:5, :2], labels[:5])
    with pytest.raises(ValueError, match="1-D"):
        batch_entropy(X, batch[:, None])


def test_batch_silhouette_without_qualifying_label_warns():
    X = np.random.default_rng(0).normal(size=(6, 2))
    with pytest.warns(RuntimeWarning, match="no label"):
        out = batch_silhouette(X, np.array([0, 0, 0, 1, 1, 1]), np.array(["a", "a", "a", "b", "b", "b"]))
    assert np.isnan(out)
