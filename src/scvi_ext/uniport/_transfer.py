"""Label transfer through the OT plan (spec §7.4) and through kNN in the latent space."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..neighbors import knn

_ROW_BLOCK = 2048


def plan_label_scores(
    plan: np.ndarray,
    ref_labels: Sequence,
    *,
    balance: bool = False,
    min_cut: float | None = None,
    categories: Sequence | None = None,
) -> pd.DataFrame:
    r"""Per-row label proportions from a (query x reference) plan (uniPort R ``mapCluster``, spec §7.4).

    :math:`S_{ic} = \sum_{j: L_j = c} T_{ij}`; ``balance=True`` divides by the type size :math:`n_c`,
    ``balance=False`` (R default) multiplies by :math:`n_c / n_r`; ``min_cut`` zeroes scores below
    ``min_cut * max_c S_ic``; rows are then normalised to sum to 1. The plan is read in row blocks, so a
    disk-backed (memmap) plan is never loaded whole.

    Parameters
    ----------
    plan
        ``(n_query, n_reference)`` non-negative array (dense or :class:`numpy.memmap`).
    ref_labels
        Labels of the reference columns.
    balance
        See above.
    min_cut
        Optional relative threshold in ``[0, 1)``.
    categories
        Column order of the result (default: sorted unique labels).

    Returns
    -------
    pandas.DataFrame
        ``(n_query, n_types)`` proportions, rows summing to 1.

    Examples
    --------
    >>> P = plan_label_scores(np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"])
    >>> P.idxmax(axis=1).tolist()
    ['a', 'b']
    """
    ref_labels = pd.Series(np.asarray(ref_labels))
    if plan.shape[1] != len(ref_labels):
        raise ValueError(
            f"ref_labels has {len(ref_labels)} entries but the plan has {plan.shape[1]} reference columns."
        )
    if min_cut is not None and not 0 <= min_cut < 1:
        raise ValueError(f"min_cut must lie in [0, 1), got {min_cut!r}.")
    cats = list(categories) if categories is not None else sorted(ref_labels.unique().tolist(), key=str)
    codes = pd.Categorical(ref_labels, categories=cats).codes
    if (codes < 0).any():
        raise ValueError("ref_labels holds labels missing from `categories`.")
    onehot = np.zeros((len(codes), len(cats)), dtype=np.float64)
    onehot[np.arange(len(codes)), codes] = 1.0
    n_c = onehot.sum(0)
    factor = 1.0 / np.maximum(n_c, 1) if balance else n_c / len(codes)
    out = np.empty((plan.shape[0], len(cats)), dtype=np.float64)
    for start in range(0, plan.shape[0], _ROW_BLOCK):
        block = plan[start : start + _ROW_BLOCK]
        block = block.toarray() if sp.issparse(block) else block
        block = np.asarray(block, dtype=np.float64)
        out[start : start + _ROW_BLOCK] = (block @ onehot) * factor
    if min_cut is not None:
        out[out < min_cut * out.max(1, keepdims=True)] = 0.0
    total = out.sum(1, keepdims=True)
    out = np.divide(out, total, out=np.full_like(out, 1.0 / len(cats)), where=total > 0)
    return pd.DataFrame(out, columns=pd.Index(cats, dtype=object))


def knn_transfer(
    ref_rep: np.ndarray,
    ref_labels: Sequence,
    query_rep: np.ndarray,
    k: int = 5,
) -> pd.DataFrame:
    """kNN (uniform vote, Euclidean) label proportions of query cells from reference cells (spec §7.4).

    Parameters
    ----------
    ref_rep, query_rep
        Reference / query representations in the same space.
    ref_labels
        Reference labels.
    k
        Neighbours (sklearn ``KNeighborsClassifier`` default 5, as the reference).

    Returns
    -------
    pandas.DataFrame
        ``(n_query, n_types)`` vote fractions.

    Examples
    --------
    >>> P = knn_transfer(np.array([[0.0], [0.1], [5.0]]), ["a", "a", "b"], np.array([[0.05], [4.9]]), k=1)
    >>> P.idxmax(axis=1).tolist()
    ['a', 'b']
    """
    ref_labels = np.asarray(ref_labels)
    cats = sorted(pd.unique(ref_labels).tolist(), key=str)
    codes = pd.Categorical(ref_labels, categories=cats).codes
    k = int(min(k, len(ref_labels)))
    idx, _ = knn(np.asarray(ref_rep, dtype=np.float32), np.asarray(query_rep, dtype=np.float32), k)
    votes = np.zeros((len(query_rep), len(cats)))
    for j in range(k):
        np.add.at(votes, (np.arange(len(query_rep)), codes[idx[:, j]]), 1.0)
    return pd.DataFrame(votes / k, columns=pd.Index(cats, dtype=object))
