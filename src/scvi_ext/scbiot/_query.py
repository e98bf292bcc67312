"""Query mapping for SCBIOT: rebuild a query's OT embedding from its counts with the reference's stored state.

The SCBIOT network reads the OT-refined embedding (``integrate_ot`` output), which is transductive. A query is
brought into it without refitting anything:

1. its counts are projected into the reference's input embedding with the reference's own projection (PCA:
   ``normalize_total`` + ``log1p``, the reference's gene order, centring vector and loadings; LSI: TF-IDF with the
   reference's IDF, its peaks, SVD components and standardisation);
2. each query cell takes the OT displacement ``X_ot - X_input`` of its reference neighbours in the input
   embedding (Gaussian-weighted mean over :data:`~scvi_ext.scbiot._constants.QUERY_MAP_K` neighbours). The OT
   moves each batch by its own prototype transport, so a query cell of a batch the reference has is matched to
   reference cells of that batch only; cells of an unseen batch are matched to all reference cells.

Step 2 assumes the query's batch effect resembles that of some reference batch (held-out cells, new samples of
a known protocol). For a query with a new, strong batch effect, run ``integrate_ot`` on reference + query
together instead (spec §6.4) and pass the query's OT embedding in ``obsm``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import DEFAULTS
from .._validation import check_counts, check_finite
from ._constants import KEYS, QUERY_KINDS, QUERY_MAP_K

if TYPE_CHECKING:
    from anndata import AnnData

_RTOL = 1e-3  # relative error allowed when checking that obsm[input_key] is the stored projection of X


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def _log_normalise(X, target_sum: float) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float64)
    lib = np.asarray(X.sum(1)).ravel()
    X = sp.diags(target_sum / np.where(lib > 0, lib, 1.0)) @ X
    return sp.csr_matrix(X).log1p()


def build_query_map(
    adata: AnnData,
    input_key: str = "X_pca",
    ot_key: str = KEYS.OT_OUT,
    *,
    kind: str | None = None,
    n_neighbors: int = QUERY_MAP_K,
) -> dict[str, Any]:
    """Record in ``adata.uns["scbiot_query_map"]`` how a query's counts are projected into ``obsm[input_key]``.

    :class:`~scvi_ext.scbiot.SCBIOT` reads this entry when it is built on ``adata`` and keeps it (with the
    reference's input and OT embeddings) in the saved model, so that :meth:`SCBIOT.load_query_data` can embed a
    query given as counts.

    Parameters
    ----------
    adata
        Reference AnnData with ``obsm[input_key]`` (the OT input) and ``obsm[ot_key]`` (the OT output).
        ``kind="pca"``: ``X`` log-normalised (``normalize_total(1e4)`` + ``log1p``, as
        :func:`scvi_ext.methods.prepare`) and ``varm["PCs"]`` the loadings of a centred PCA of ``X``
        (``sc.pp.pca``). ``kind="lsi"``: ``uns["scbiot_lsi"]`` written by :func:`~scvi_ext.scbiot.lsi`.
    input_key
        The embedding ``integrate_ot`` refined.
    ot_key
        The OT output the SCBIOT model is set up on.
    kind
        ``"pca"`` or ``"lsi"``; ``None``: ``"lsi"`` when :func:`~scvi_ext.scbiot.lsi` wrote ``input_key``.
    n_neighbors
        Reference neighbours whose OT displacement a query cell takes.

    Returns
    -------
    dict
        The projection (also in ``adata.uns["scbiot_query_map"]``).

    Examples
    --------
    >>> from scvi_ext.methods import prepare
    >>> import scvi_ext.scbiot as scb
    >>> ad = prepare(counts, "batch")  # doctest: +SKIP
    >>> scb.integrate(ad, "rna", obsm_key="X_pca", batch_key="batch")  # doctest: +SKIP
    >>> qmap = scb.build_query_map(ad)  # doctest: +SKIP
    """
    for key in (input_key, ot_key):
        if key not in adata.obsm:
            raise KeyError(f"{key!r} is not in adata.obsm (available: {sorted(adata.obsm.keys())}).")
    Z = np.asarray(adata.obsm[input_key], dtype=np.float64)
    if np.asarray(adata.obsm[ot_key]).shape != Z.shape:
        raise ValueError(
            f"adata.obsm[{ot_key!r}] has shape {np.asarray(adata.obsm[ot_key]).shape}, expected {Z.shape} "
            f"(the OT output of adata.obsm[{input_key!r}])."
        )
    lsi_proj = adata.uns.get(KEYS.LSI_PROJECTION)
    if kind is None:
        kind = (
            QUERY_KINDS.LSI
            if lsi_proj is not None and lsi_proj.get("obsm_key") == input_key
            else QUERY_KINDS.PCA
        )
    if kind not in QUERY_KINDS:
        raise ValueError(f"kind must be one of {list(QUERY_KINDS)}, got {kind!r}.")
    if int(n_neighbors) < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors!r}.")
    out: dict[str, Any] = {
        "kind": kind,
        "input_key": input_key,
        "ot_key": ot_key,
        "n_neighbors": int(n_neighbors),
    }
    if kind == QUERY_KINDS.LSI:
        if lsi_proj is None or lsi_proj.get("obsm_key") != input_key:
            raise KeyError(
                f"kind='lsi' needs adata.uns[{KEYS.LSI_PROJECTION!r}] written by scvi_ext.scbiot.lsi("
                f"key_added={input_key!r})."
            )
        out.update({k: lsi_proj[k] for k in ("features", "idf", "scale_factor", "components", "mean", "std")})
    else:
        if "PCs" not in adata.varm:
            raise KeyError(
                "kind='pca' needs the PCA loadings in adata.varm['PCs'] (sc.pp.pca / scvi_ext.methods.prepare)."
            )
        W = np.asarray(adata.varm["PCs"], dtype=np.float64)
        if W.shape != (adata.n_vars, Z.shape[1]):
            raise ValueError(f"adata.varm['PCs'] has shape {W.shape}, expected {(adata.n_vars, Z.shape[1])}.")
        X = adata.X
        check_finite(X, "adata.X")
        mean = np.asarray(X.mean(0), dtype=np.float64).ravel()
        rows = np.arange(min(adata.n_obs, 500))
        err = np.abs((_dense(X[rows]) - mean) @ W - Z[rows]).max()
        if err > _RTOL * (np.abs(Z[rows]).max() + 1e-12):
            raise ValueError(
                f"adata.obsm[{input_key!r}] is not (X - mean(X)) @ varm['PCs'] (max error {err:.3g}): the query "
                "could not be projected the same way. Use the AnnData the PCA was computed on."
            )
        out.update(
            features=np.asarray(adata.var_names, dtype=str),
            target_sum=float(DEFAULTS.TARGET_SUM),
            mean=mean.astype(np.float32),
            components=W.T.astype(np.float32),
        )
    adata.uns[KEYS.QUERY_MAP] = out
    return out


def _aligned_counts(query: AnnData, layer: str | None, features: np.ndarray):
    """Counts of ``query`` (all its genes/peaks) and the column of each reference feature (-1: missing)."""
    import warnings

    if layer is None:
        layer = KEYS.COUNTS_LAYER if KEYS.COUNTS_LAYER in query.layers else None
    X = query.X if layer is None else query.layers[layer]
    check_counts(X, "query.X" if layer is None else f"query.layers[{layer!r}]")
    pos = pd.Index(query.var_names).get_indexer(pd.Index(np.asarray(features, dtype=str)))
    missing = int((pos < 0).sum())
    if missing == len(pos):
        raise ValueError("The query shares none of the reference's features (var_names); check the names.")
    if missing:
        warnings.warn(
            f"The query lacks {missing} of the reference's {len(pos)} features; they count as zero.",
            UserWarning,
            stacklevel=3,
        )
    return sp.csr_matrix(X, dtype=np.float64), pos


def _select(X: sp.csr_matrix, pos: np.ndarray) -> np.ndarray:
    out = np.zeros((X.shape[0], len(pos)), dtype=np.float64)
    have = pos >= 0
    out[:, have] = _dense(X[:, pos[have]])
    return out


def project_query(
    query: AnnData, query_map: dict[str, Any], *, layer: str | None = None, batch_key: str | None = None
) -> np.ndarray:
    """Write the query's input embedding and OT embedding (``obsm``) from its counts with a reference's map.

    Parameters
    ----------
    query
        Query cells with raw counts in ``layers["counts"]`` (or ``layers[layer]``, else ``X``), genes/peaks named
        like the reference's (missing ones count as zero, with a warning).
    query_map
        :func:`build_query_map` output completed with the reference embeddings (``SCBIOT.query_map_``).
    layer
        Counts layer (``None``: ``"counts"`` if present, else ``X``).
    batch_key
        Query batch column: cells of a batch the reference has take the displacement of that batch's reference
        cells (needs ``query_map["ref_batch"]``). ``None``: all reference cells.

    Returns
    -------
    numpy.ndarray
        The query's OT embedding (also in ``query.obsm[query_map["ot_key"]]``; the projected input embedding is
        in ``query.obsm[query_map["input_key"]]``).

    Examples
    --------
    >>> Xq = project_query(query, model.query_map_)  # doctest: +SKIP
    """
    from ..neighbors import knn

    for key in ("ref_input", "ref_shift"):
        if key not in query_map:
            raise KeyError(
                f"query_map lacks {key!r}: use the map stored on a trained SCBIOT (model.query_map_)."
            )
    X, pos = _aligned_counts(query, layer, query_map["features"])
    if query_map["kind"] == QUERY_KINDS.LSI:
        row = np.asarray(X.sum(1)).ravel()
        tf = _select(X, pos) / np.maximum(row, 1e-12)[:, None]
        T = np.log1p(tf * np.asarray(query_map["idf"])[None] * float(query_map["scale_factor"]))
        Z = (T @ np.asarray(query_map["components"], dtype=np.float64).T - query_map["mean"]) / query_map[
            "std"
        ]
    else:
        L = _select(_log_normalise(X, float(query_map["target_sum"])), pos)
        Z = (L - np.asarray(query_map["mean"], dtype=np.float64)) @ np.asarray(
            query_map["components"], dtype=np.float64
        ).T
    Z = Z.astype(np.float32)
    ref_in = np.asarray(query_map["ref_input"], dtype=np.float32)
    ref_shift = np.asarray(query_map["ref_shift"], dtype=np.float32)
    groups = [(np.arange(query.n_obs), np.arange(len(ref_in)))]
    if batch_key is not None and query_map.get("ref_batch") is not None:
        if batch_key not in query.obs:
            raise KeyError(f"batch_key={batch_key!r} is not a column of query.obs.")
        rb = np.asarray(query_map["ref_batch"], dtype=str)
        qb = query.obs[batch_key].astype(str).to_numpy()
        known = np.isin(qb, rb)
        groups = [(np.flatnonzero(qb == b), np.flatnonzero(rb == b)) for b in np.unique(qb[known])]
        if (~known).any():
            groups.append((np.flatnonzero(~known), np.arange(len(ref_in))))
    shift = np.zeros_like(Z)
    for rows, cand in groups:
        k = int(min(query_map["n_neighbors"], len(cand)))
        idx, dist = knn(ref_in[cand], Z[rows], k=k)
        scale = np.median(dist, axis=1, keepdims=True) + 1e-8
        w = np.exp(-0.5 * (dist / scale) ** 2)
        w /= w.sum(1, keepdims=True)
        shift[rows] = np.einsum("nk,nkd->nd", w, ref_shift[cand][idx])
    X_ot = (Z + shift).astype(np.float32)
    query.obsm[query_map["input_key"]] = Z
    query.obsm[query_map["ot_key"]] = X_ot
    return X_ot


def complete_query_map(adata: AnnData, obsm_key: str, batch_key: str | None = None) -> dict[str, Any] | None:
    """The model-side query map: ``adata.uns["scbiot_query_map"]`` plus the reference embeddings and batches."""
    qmap = adata.uns.get(KEYS.QUERY_MAP)
    if qmap is None or qmap.get("ot_key") != obsm_key or qmap.get("input_key") not in adata.obsm:
        return None
    ref_in = np.asarray(adata.obsm[qmap["input_key"]], dtype=np.float32)
    ref_ot = np.asarray(adata.obsm[obsm_key], dtype=np.float32)
    if ref_in.shape != ref_ot.shape:
        return None
    ref_batch = None if batch_key is None else np.asarray(adata.obs[batch_key].astype(str), dtype=str)
    return {**dict(qmap), "ref_input": ref_in, "ref_shift": ref_ot - ref_in, "ref_batch": ref_batch}
