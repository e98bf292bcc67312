"""Spatial deconvolution through the OT plan (spec §7.5) and pseudo-spots with known proportions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._transfer import plan_label_scores


def deconvolve_plan(
    plan: np.ndarray,
    cell_labels: Sequence,
    *,
    spots_are_rows: bool = True,
    balance: bool = True,
    min_cut: float | None = None,
    categories: Sequence | None = None,
) -> pd.DataFrame:
    """Cell-type proportions per spot from a spots x cells (or cells x spots) plan (spec §7.5).

    Parameters
    ----------
    plan
        Global OT plan; spots x cells when ``spots_are_rows`` (spots were the query), else cells x spots.
    cell_labels
        Labels of the cells.
    spots_are_rows
        Orientation of ``plan``.
    balance, min_cut
        See :func:`~scvi_ext.uniport.plan_label_scores` (PDAC tutorial: ``balance=True``).
    categories
        Column order.

    Returns
    -------
    pandas.DataFrame
        Spots x cell types, rows summing to 1.

    Examples
    --------
    >>> deconvolve_plan(np.array([[0.5, 0.5, 0.0]]), ["a", "b", "b"]).round(2).values.tolist()
    [[0.67, 0.33]]
    """
    plan_sc = plan if spots_are_rows else (plan.T.tocsr() if sp.issparse(plan) else np.asarray(plan).T)
    return plan_label_scores(plan_sc, cell_labels, balance=balance, min_cut=min_cut, categories=categories)


def make_pseudo_spots(
    adata: AnnData,
    labels_key: str,
    *,
    n_spots: int = 200,
    cells_per_spot: tuple[int, int] = (5, 15),
    max_types: int = 4,
    layer: str | None = None,
    seed: int = 0,
) -> tuple[AnnData, pd.DataFrame]:
    """Pseudo-spots: sums of the counts of a few labelled cells, with their known type proportions.

    Each spot draws ``1..max_types`` cell types, then ``cells_per_spot`` cells among them (with
    replacement across spots), and sums their counts.

    Parameters
    ----------
    adata
        Labelled single-cell counts (not modified).
    labels_key
        Cell-type column.
    n_spots
        Number of pseudo-spots.
    cells_per_spot
        Inclusive range of cells per spot.
    max_types
        Most cell types in one spot.
    layer
        Counts layer (``None``: X).
    seed
        Random seed.

    Returns
    -------
    spots : anndata.AnnData
        ``n_spots`` x genes counts.
    proportions : pandas.DataFrame
        ``n_spots`` x types (cell fractions), indexed like ``spots``.

    Examples
    --------
    >>> import anndata
    >>> ad = anndata.AnnData(np.ones((6, 2)), obs=pd.DataFrame({"t": list("aabbcc")}, index=list("123456")))
    >>> spots, props = make_pseudo_spots(ad, "t", n_spots=3, cells_per_spot=(2, 3), seed=0)
    >>> np.allclose(props.sum(1), 1)
    True
    """
    if labels_key not in adata.obs:
        raise KeyError(f"labels_key={labels_key!r} is not a column of adata.obs.")
    rng = np.random.default_rng(seed)
    X = adata.X if layer is None else adata.layers[layer]
    X = sp.csr_matrix(X)
    labels = adata.obs[labels_key].astype(str).to_numpy()
    cats = sorted(np.unique(labels).tolist())
    by_type = {c: np.flatnonzero(labels == c) for c in cats}
    rows, props = [], np.zeros((n_spots, len(cats)))
    weights = sp.lil_matrix((n_spots, adata.n_obs))
    for s in range(n_spots):
        types = rng.choice(len(cats), size=rng.integers(1, max_types + 1), replace=False)
        n_cells = int(rng.integers(cells_per_spot[0], cells_per_spot[1] + 1))
        chosen_types = rng.choice(types, size=n_cells)
        for t in chosen_types:
            cell = int(rng.choice(by_type[cats[t]]))
            weights[s, cell] += 1
            props[s, t] += 1
        rows.append(s)
    props /= props.sum(1, keepdims=True)
    counts = sp.csr_matrix(weights.tocsr() @ X)
    names = pd.Index([f"pseudo_spot_{i}" for i in range(n_spots)])
    spots = AnnData(counts, obs=pd.DataFrame(index=names), var=pd.DataFrame(index=adata.var_names.copy()))
    return spots, pd.DataFrame(props, index=names, columns=pd.Index(cats, dtype=object))


def proportion_scores(truth: pd.DataFrame, estimate: pd.DataFrame) -> dict[str, float]:
    """Pearson correlation (all entries and mean per spot) and RMSE between true and estimated proportions.

    Columns missing on one side count as 0.

    Examples
    --------
    >>> t = pd.DataFrame([[0.5, 0.5], [1.0, 0.0]], columns=["a", "b"])
    >>> proportion_scores(t, t)["rmse"]
    0.0
    """
    cols = sorted(set(truth.columns) | set(estimate.columns), key=str)
    T = truth.reindex(columns=cols, fill_value=0.0).to_numpy(float)
    E = estimate.reindex(columns=cols, fill_value=0.0).to_numpy(float)
    per_spot = [np.corrcoef(t, e)[0, 1] for t, e in zip(T, E, strict=True) if t.std() > 0 and e.std() > 0]
    return {
        "pearson_all": float(np.corrcoef(T.ravel(), E.ravel())[0, 1]),
        "pearson_per_spot_mean": float(np.mean(per_spot)) if per_spot else float("nan"),
        "rmse": float(np.sqrt(np.mean((T - E) ** 2))),
    }
