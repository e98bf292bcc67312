"""Triplet mining within groups and the triplet margin loss (scCRAFT, sccraft.md §4 L6 and §5)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

TRIPLET_STRATEGIES = ("random", "hardest", "semihard", "sccraft")
NEGATIVE_SAMPLING = ("cell", "cluster")


def _codes(x: torch.Tensor, n: int | None, argument: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 1 or (n is not None and x.shape[0] != n):
        expected = f"({n},) or ({n}, 1)" if n is not None else "(N,) or (N, 1)"
        raise ValueError(f"{argument} must have shape {expected}; got {tuple(x.shape)}.")
    return x.long()


def _uniform_pick(mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Column index drawn uniformly among the True entries of each row (rows must have one)."""
    scores = torch.rand(mask.shape, generator=generator).to(mask.device)
    return scores.masked_fill(~mask, -1.0).argmax(dim=1)


def unrank_pairs(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Map linear indices ``k`` of unordered pairs ``i < j`` of ``n`` items (lexicographic order) to ``(i, j)``.

    Parameters
    ----------
    k
        Integers in ``[0, n (n - 1) / 2)``.
    n
        Number of items.

    Returns
    -------
    tuple of numpy.ndarray
        ``i`` and ``j`` with ``i < j``.

    Examples
    --------
    >>> unrank_pairs(np.arange(3), 3)
    (array([0, 0, 1]), array([1, 2, 2]))
    """
    k = np.asarray(k, dtype=np.int64)
    n_pairs = n * (n - 1) // 2
    i = n - 2 - np.floor(np.sqrt(-8.0 * k + 4.0 * n * (n - 1) - 7.0) / 2.0 - 0.5).astype(np.int64)
    j = k + i + 1 - n_pairs + (n - i) * ((n - i) - 1) // 2
    return i, j


def _sccraft_triplets(
    group: np.ndarray,
    coarse: np.ndarray,
    fine: np.ndarray | None,
    n_per_cluster: int,
    negative_sampling: str,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    anchors, positives, negatives = [], [], []
    for u in np.unique(group):
        in_group = np.flatnonzero(group == u)  # minibatch order
        labels = coarse[in_group]
        for a in np.unique(labels):
            P = in_group[labels == a]
            Q = in_group[labels != a]
            n_p = len(P)
            if n_p < 2 or len(Q) == 0:
                continue
            n_pairs = n_p * (n_p - 1) // 2
            k = rng.choice(n_pairs, size=min(n_per_cluster, n_pairs), replace=False)
            i, j = unrank_pairs(k, n_p)
            n_neg = min(len(k), len(Q))
            if negative_sampling == "cell":
                neg = rng.choice(Q, size=n_neg, replace=False)
            else:  # a random other cluster, then a random cell in it
                q_labels = coarse[Q]
                clusters = np.unique(q_labels)
                picked = rng.choice(clusters, size=n_neg, replace=True)
                neg = np.array([rng.choice(Q[q_labels == c]) for c in picked], dtype=np.int64)
            anchors.append(P[i[:n_neg]])
            positives.append(P[j[:n_neg]])
            negatives.append(neg)
    if not anchors:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    a, p, n = (np.concatenate(x).astype(np.int64) for x in (anchors, positives, negatives))
    if fine is not None:  # high-resolution filter: anchor and positive must share the fine label
        keep = fine[a] == fine[p]
        a, p, n = a[keep], p[keep], n[keep]
    return a, p, n


def mine_triplets(
    z: torch.Tensor | None,
    group_ids: torch.Tensor,
    positive_ids: torch.Tensor,
    *,
    strategy: Literal["random", "hardest", "semihard", "sccraft"] = "random",
    fine_ids: torch.Tensor | None = None,
    margin: float | None = None,
    n_per_cluster: int = 15,
    negative_sampling: Literal["cell", "cluster"] = "cell",
    max_triplets: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick (anchor, positive, negative) row indices that never cross groups.

    A positive shares the anchor's group **and** positive-label (and fine label, if given); a negative
    shares the anchor's group and has a **different** positive-label. For scCRAFT (sccraft.md §5):
    ``group_ids`` = batch, ``positive_ids`` = low-resolution cluster, ``fine_ids`` = high-resolution
    cluster, ``strategy="sccraft"``.

    Strategies:

    - ``"random"``: every cell with a valid positive and negative is an anchor; positive and negative
      uniformly at random among the valid ones.
    - ``"hardest"``: farthest valid positive, closest valid negative (in ``z``, no gradient).
    - ``"semihard"``: random positive; the closest negative with ``d_ap < d_an < d_ap + margin``,
      falling back to the hardest negative when there is none (Schroff et al., 2015).
    - ``"sccraft"``: the reference scheme. Per (group, positive-label) set ``P`` with other-label cells
      ``Q`` in the same group: draw ``min(n_per_cluster, |P|(|P|-1)/2)`` distinct unordered pairs of ``P``
      uniformly (anchor = the earlier row), ``min(#pairs, |Q|)`` distinct negatives from ``Q``
      (``negative_sampling="cell"``; ``"cluster"``: a random other cluster, then a random cell), zip
      them, and finally drop triplets whose anchor and positive differ in ``fine_ids``.

    Parameters
    ----------
    z
        ``(N, L)`` latent codes; needed for ``"hardest"``/``"semihard"``, may be ``None`` otherwise.
    group_ids
        ``(N,)`` or ``(N, 1)`` codes of the groups triplets must stay within (e.g. batch).
    positive_ids
        Codes defining positives (same) and negatives (different) inside a group.
    strategy
        One of ``"random"``, ``"hardest"``, ``"semihard"``, ``"sccraft"``.
    fine_ids
        Optional extra label the anchor and positive must share.
    margin
        Margin of the semi-hard window (required for ``"semihard"``).
    n_per_cluster
        Pairs drawn per (group, positive-label) set with ``"sccraft"`` (reference: 15).
    negative_sampling
        ``"cell"`` (reference) or ``"cluster"`` (paper text), for ``"sccraft"``.
    max_triplets
        Keep at most this many triplets (a uniform random subset).
    generator
        Optional CPU ``torch.Generator`` for reproducible draws.

    Returns
    -------
    tuple of torch.Tensor
        ``(anchor, positive, negative)`` long tensors of equal length ``T`` (possibly 0), on the device
        of ``z`` (or of ``group_ids``).

    Examples
    --------
    >>> g = torch.tensor([0, 0, 0, 1, 1, 1])
    >>> y = torch.tensor([0, 0, 1, 0, 0, 1])
    >>> a, p, n = mine_triplets(None, g, y)
    >>> bool((g[a] == g[n]).all() and (y[a] == y[p]).all() and (y[a] != y[n]).all())
    True
    """
    if strategy not in TRIPLET_STRATEGIES:
        raise ValueError(f"strategy must be one of {TRIPLET_STRATEGIES}, got {strategy!r}.")
    if negative_sampling not in NEGATIVE_SAMPLING:
        raise ValueError(f"negative_sampling must be one of {NEGATIVE_SAMPLING}, got {negative_sampling!r}.")
    if strategy in ("hardest", "semihard") and z is None:
        raise ValueError(f"strategy={strategy!r} needs the latent codes z.")
    if strategy == "semihard" and margin is None:
        raise ValueError("strategy='semihard' needs margin=.")
    if n_per_cluster < 1:
        raise ValueError(f"n_per_cluster must be >= 1, got {n_per_cluster}.")
    n = None if z is None else z.shape[0]
    g = _codes(group_ids, n, "group_ids")
    n = g.shape[0]
    y = _codes(positive_ids, n, "positive_ids")
    f = None if fine_ids is None else _codes(fine_ids, n, "fine_ids")
    device = z.device if z is not None else g.device

    if strategy == "sccraft":
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        rng = np.random.default_rng(seed)
        a, p, ng = _sccraft_triplets(
            g.cpu().numpy(),
            y.cpu().numpy(),
            None if f is None else f.cpu().numpy(),
            n_per_cluster,
            negative_sampling,
            rng,
        )
        anchor, positive, negative = (torch.as_tensor(x, dtype=torch.long, device=device) for x in (a, p, ng))
    else:
        g, y = g.to(device), y.to(device)
        same_group = g[:, None] == g[None, :]
        same_label = y[:, None] == y[None, :]
        pos_mask = same_group & same_label
        pos_mask.fill_diagonal_(False)
        if f is not None:
            f = f.to(device)
            pos_mask &= f[:, None] == f[None, :]
        neg_mask = same_group & ~same_label
        anchor = torch.nonzero(pos_mask.any(1) & neg_mask.any(1), as_tuple=True)[0]
        pos_mask, neg_mask = pos_mask[anchor], neg_mask[anchor]
        if strategy == "random":
            positive = _uniform_pick(pos_mask, generator)
            negative = _uniform_pick(neg_mask, generator)
        else:
            with torch.no_grad():
                d = torch.cdist(z.detach()[anchor], z.detach())
            if strategy == "hardest":
                positive = d.masked_fill(~pos_mask, -float("inf")).argmax(dim=1)
                negative = d.masked_fill(~neg_mask, float("inf")).argmin(dim=1)
            else:
                positive = _uniform_pick(pos_mask, generator)
                d_ap = d.gather(1, positive[:, None])
                window = neg_mask & (d > d_ap) & (d < d_ap + margin)
                semi = d.masked_fill(~window, float("inf")).argmin(dim=1)
                hard = d.masked_fill(~neg_mask, float("inf")).argmin(dim=1)
                negative = torch.where(window.any(1), semi, hard)

    if max_triplets is not None and anchor.shape[0] > max_triplets:
        keep = torch.randperm(anchor.shape[0], generator=generator)[:max_triplets].to(anchor.device)
        anchor, positive, negative = anchor[keep], positive[keep], negative[keep]
    return anchor, positive, negative


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = 1.0,
    squared: bool = False,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> torch.Tensor:
    """Triplet margin loss ``relu(d(a, p) - d(a, n) + margin)`` with Euclidean distances.

    scCRAFT uses plain (not squared) distances, margin 5 and the mean over triplets, and 0 when no
    triplet survives (sccraft.md §4 L6, §13 #1/#22).

    Parameters
    ----------
    anchor, positive, negative
        ``(T, L)`` embeddings (e.g. ``z[a_idx]``, ``z[p_idx]``, ``z[n_idx]``).
    margin
        Margin.
    squared
        Use squared distances (the paper's eq. 5).
    reduction
        ``"mean"``, ``"sum"`` or ``"none"``.

    Returns
    -------
    torch.Tensor
        Scalar (``0`` connected to the graph when ``T = 0``), or ``(T,)``.

    Examples
    --------
    >>> a = torch.zeros(1, 2); p = torch.tensor([[3.0, 4.0]]); n = torch.tensor([[0.0, 1.0]])
    >>> triplet_loss(a, p, n, margin=1.0)
    tensor(5.)
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
    if anchor.shape != positive.shape or anchor.shape != negative.shape or anchor.dim() != 2:
        raise ValueError(
            "anchor, positive and negative must have the same (T, L) shape; got "
            f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}."
        )
    if squared:
        d_ap = (anchor - positive).pow(2).sum(-1)
        d_an = (anchor - negative).pow(2).sum(-1)
    else:
        d_ap = torch.linalg.vector_norm(anchor - positive, dim=-1)
        d_an = torch.linalg.vector_norm(anchor - negative, dim=-1)
    losses = torch.relu(d_ap - d_an + margin)
    if reduction == "none":
        return losses
    if losses.numel() == 0:
        return anchor.sum() * 0.0
    return losses.mean() if reduction == "mean" else losses.sum()
