"""Dual-resolution pseudo-labels computed once before training (sccraft.md §6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .._validation import check_finite, check_nonempty, check_obs_key, get_matrix
from ._constants import CLUSTER_METHODS, DEFAULTS, LEIDEN_FLAVORS, OBS_KEYS, UNS_KEYS

if TYPE_CHECKING:
    from anndata import AnnData


def _cluster(
    work: AnnData, method: str, resolution: float, flavor: str, random_state: int, **kw
) -> pd.Series:
    import scanpy as sc

    if method == "leiden":
        extra = {"flavor": flavor}
        if flavor == "igraph":
            extra.update(n_iterations=2, directed=False)
        sc.tl.leiden(work, resolution=resolution, random_state=random_state, key_added="_c", **extra, **kw)
    else:
        try:
            sc.tl.louvain(work, resolution=resolution, random_state=random_state, key_added="_c", **kw)
        except ImportError as err:  # pragma: no cover - depends on the optional `louvain` package
            raise ImportError(
                "method='louvain' needs the `louvain` package (broken with igraph >= 1.0); use method='leiden'."
            ) from err
    return work.obs["_c"].astype(str)


def _graph(work: AnnData, n_pcs: int, n_neighbors: int, random_state: int) -> None:
    import scanpy as sc

    n_comps = max(1, min(n_pcs, work.n_obs - 1, work.n_vars - 1))
    sc.tl.pca(work, n_comps=n_comps, random_state=random_state)
    sc.pp.neighbors(
        work, n_neighbors=min(n_neighbors, work.n_obs - 1), use_rep="X_pca", random_state=random_state
    )


def multi_resolution_cluster(
    adata: AnnData,
    resolution_low: float = DEFAULTS.RESOLUTION_LOW,
    resolution_high: float = DEFAULTS.RESOLUTION_HIGH,
    method: Literal["leiden", "louvain"] = "leiden",
    *,
    n_pcs: int = DEFAULTS.N_PCS_CLUSTER,
    n_neighbors: int = DEFAULTS.N_NEIGHBORS_CLUSTER,
    key_low: str = OBS_KEYS.LOW,
    key_high: str = OBS_KEYS.HIGH,
    layer: str | None = None,
    batch_key: str | None = None,
    per_batch: bool = False,
    nested: bool = False,
    flavor: Literal["leidenalg", "igraph"] = "leidenalg",
    random_state: int = 0,
) -> AnnData:
    """Low- and high-resolution clusterings of the unintegrated data, for the triplet term.

    PCA (``n_pcs``) of the log-normalised matrix, a ``n_neighbors`` kNN graph (scanpy defaults), then
    Leiden (or Louvain) at ``resolution_low`` and at ``resolution_high`` on the **same** graph; written
    to ``adata.obs[key_low]`` / ``adata.obs[key_high]`` as categoricals (the reference's
    ``leiden1``/``leiden2``). The work is done on a copy, so unlike the reference no PCA or graph is
    left in ``adata``; the settings are recorded in ``adata.uns['sccraft_clustering']``.

    Parameters
    ----------
    adata
        Log-normalised HVG expression in ``X`` (or ``layer``), all batches together.
    resolution_low, resolution_high
        Resolutions (reference 0.5 and 7; the paper suggests 1.0 for many subtypes, 0.2 for coarse labels).
    method
        ``"leiden"`` (default; the reference notebooks) or ``"louvain"`` (needs the ``louvain`` package).
    n_pcs, n_neighbors
        PCA size and neighbours of the graph.
    key_low, key_high
        ``obs`` columns to write.
    layer
        Layer to cluster instead of ``X``.
    batch_key
        Batch column; needed only for ``per_batch=True``.
    per_batch
        Cluster every batch separately (the paper's "within batches" reading); labels are prefixed with
        the batch.
    nested
        Cluster at ``resolution_high`` *inside* each low-resolution cluster (the paper's reading) instead
        of globally (the reference).
    flavor
        Leiden implementation: ``"leidenalg"`` (what the reference ran with scanpy < 1.12) or
        ``"igraph"`` (scanpy's future default, faster; 2 iterations, undirected).
    random_state
        Seed of PCA, graph and clustering.

    Returns
    -------
    anndata.AnnData
        ``adata`` (modified in place: the two ``obs`` columns and the ``uns`` record).

    Examples
    --------
    >>> multi_resolution_cluster(adata)  # doctest: +SKIP
    >>> adata.obs[["leiden1", "leiden2"]].nunique()  # doctest: +SKIP
    """
    import anndata

    method = str(method).lower()
    if method not in CLUSTER_METHODS:
        raise ValueError(f"method must be one of {CLUSTER_METHODS} (case-insensitive), got {method!r}.")
    if flavor not in LEIDEN_FLAVORS:
        raise ValueError(f"flavor must be one of {LEIDEN_FLAVORS}, got {flavor!r}.")
    if resolution_low <= 0 or resolution_high <= 0:
        raise ValueError(f"resolutions must be > 0, got {resolution_low} and {resolution_high}.")
    check_nonempty(adata)
    X = get_matrix(adata, layer)
    check_finite(X, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
    if per_batch:
        if batch_key is None:
            raise ValueError("per_batch=True needs batch_key=.")
        check_obs_key(adata, batch_key, "batch_key")
    if adata.n_obs < 3:
        raise ValueError(f"multi_resolution_cluster needs at least 3 cells, got {adata.n_obs}.")

    work = anndata.AnnData(X=X.copy(), obs=pd.DataFrame(index=np.asarray(adata.obs_names, dtype=str)))
    low = pd.Series(index=work.obs_names, dtype=object)
    high = pd.Series(index=work.obs_names, dtype=object)
    groups = (
        [(None, np.arange(work.n_obs))]
        if not per_batch
        else [
            (b, np.flatnonzero((adata.obs[batch_key] == b).to_numpy()))
            for b in pd.unique(adata.obs[batch_key])
        ]
    )
    for name, rows in groups:
        sub = work[rows].copy() if name is not None else work
        prefix = "" if name is None else f"{name}:"
        if sub.n_obs < 3:  # too small to cluster: one cluster
            low.iloc[rows] = prefix + "0"
            high.iloc[rows] = prefix + "0"
            continue
        _graph(sub, n_pcs, n_neighbors, random_state)
        lo = _cluster(sub, method, resolution_low, flavor, random_state)
        if nested:
            sub.obs["_lo"] = pd.Categorical(lo.to_numpy())
            hi = _cluster(
                sub,
                method,
                resolution_high,
                flavor,
                random_state,
                restrict_to=("_lo", list(sub.obs["_lo"].cat.categories)),
            )
            hi = hi.str.replace(",", "_")
        else:
            hi = _cluster(sub, method, resolution_high, flavor, random_state)
        low.iloc[rows] = (prefix + lo).to_numpy()
        high.iloc[rows] = (prefix + hi).to_numpy()

    def _categorical(s: pd.Series) -> pd.Categorical:
        values = s.to_numpy().astype(str)
        cats = sorted(pd.unique(values), key=lambda c: (len(c), c))
        return pd.Categorical(values, categories=cats)

    adata.obs[key_low] = _categorical(low)
    adata.obs[key_high] = _categorical(high)
    adata.uns[UNS_KEYS.CLUSTERING] = {
        "method": method,
        "flavor": flavor if method == "leiden" else "louvain",
        "resolution_low": float(resolution_low),
        "resolution_high": float(resolution_high),
        "n_pcs": int(n_pcs),
        "n_neighbors": int(n_neighbors),
        "per_batch": bool(per_batch),
        "nested": bool(nested),
        "random_state": int(random_state),
        "key_low": key_low,
        "key_high": key_high,
    }
    return adata
