"""ATAC helpers for the scBIOT workflows: TF-IDF, (iterative) LSI and an RNA + gene-activity co-embedding."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._validation import check_counts, get_matrix
from ._constants import KEYS

if TYPE_CHECKING:
    from anndata import AnnData


def tfidf(X, scale_factor: float = 1e4, log_tf: bool = True):
    """Signac-style TF-IDF of a cells × peaks count matrix: ``log1p(tf · idf · scale_factor)``.

    ``tf = x / rowsum``, ``idf = n_cells / colsum`` (peaks never seen get ``idf = 0``).

    Parameters
    ----------
    X
        Counts (dense or sparse).
    scale_factor
        Multiplier before the log.
    log_tf
        Apply ``log1p`` (Signac method 1).

    Returns
    -------
    scipy.sparse.csr_matrix
        TF-IDF matrix (float32).

    Examples
    --------
    >>> import numpy as np
    >>> tfidf(np.array([[1, 0], [1, 1]])).shape
    (2, 2)
    """
    X = sp.csr_matrix(X, dtype=np.float64)
    row = np.asarray(X.sum(1)).ravel()
    col = np.asarray(X.sum(0)).ravel()
    idf = np.where(col > 0, X.shape[0] / np.maximum(col, 1e-12), 0.0)
    tf = sp.diags(1.0 / np.maximum(row, 1e-12)) @ X
    out = tf @ sp.diags(idf) * scale_factor
    if log_tf:
        out = out.log1p()
    return sp.csr_matrix(out, dtype=np.float32)


def lsi(
    adata: AnnData,
    n_components: int = 30,
    *,
    layer: str | None = None,
    n_iter: int = 2,
    n_top_features: int | None = None,
    resolution: float = 0.8,
    drop_first: bool = True,
    key_added: str = KEYS.LSI,
    random_state: int = 0,
) -> np.ndarray:
    """(Iterative) LSI of ATAC peak counts: TF-IDF → truncated SVD, first component dropped (depth).

    With ``n_iter > 1`` (ArchR-style): LSI on all peaks → Leiden clusters → keep the ``n_top_features`` peaks
    most variable across cluster means of the TF-IDF → LSI again on those peaks.

    Parameters
    ----------
    adata
        Cells × peaks AnnData with raw counts.
    n_components
        Components kept (after dropping the first one).
    layer
        Counts layer (``None``: ``X``).
    n_iter
        LSI rounds.
    n_top_features
        Peaks kept in later rounds (default: half of the peaks, at least 2·n_components).
    resolution
        Leiden resolution of the intermediate clustering.
    drop_first
        Drop the first component (correlates with sequencing depth).
    key_added
        ``obsm`` key written.
    random_state
        Seed.

    Returns
    -------
    numpy.ndarray
        ``(n_obs, n_components)`` LSI embedding (also in ``adata.obsm[key_added]``), rows standardised per
        component. What a query needs to be projected into it (peaks kept, their IDF, the SVD components and
        the standardisation) goes to ``adata.uns["scbiot_lsi"]`` (used by :func:`build_query_map`).

    Examples
    --------
    >>> lsi(atac, n_components=10)  # doctest: +SKIP
    """
    from sklearn.decomposition import TruncatedSVD

    X = get_matrix(adata, layer)
    check_counts(X, "adata.X" if layer is None else f"layer {layer!r}")
    T = tfidf(X)
    n_cells, n_peaks = T.shape
    k = int(n_components + (1 if drop_first else 0))
    if k >= min(n_cells, n_peaks):
        raise ValueError(f"n_components={n_components} is too large for {n_cells} cells x {n_peaks} peaks.")
    features = np.arange(n_peaks)

    proj: dict = {}

    def _svd(M):
        svd = TruncatedSVD(n_components=k, random_state=random_state, algorithm="arpack")
        Z = svd.fit_transform(M)
        comps = svd.components_
        if drop_first:
            Z, comps = Z[:, 1:], comps[1:]
        proj.update(components=comps.astype(np.float32), mean=Z.mean(0), std=Z.std(0) + 1e-8)
        return (Z - proj["mean"]) / proj["std"]

    Z = _svd(T)
    for _ in range(1, int(n_iter)):
        import anndata as ad

        from ._model import pseudo_labels

        tmp = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()))
        tmp.obsm["lsi"] = Z
        cl = pseudo_labels(
            tmp, "lsi", resolution=resolution, key_added="c", random_state=random_state
        ).to_numpy()
        means = np.vstack([np.asarray(T[cl == c].mean(0)).ravel() for c in np.unique(cl)])
        n_top = n_top_features or max(2 * k, n_peaks // 2)
        features = np.argsort(means.var(0))[::-1][: min(n_top, n_peaks)]
        Z = _svd(T[:, np.sort(features)])
    adata.obsm[key_added] = Z.astype(np.float32)
    sel = np.sort(features)
    col = np.asarray(sp.csr_matrix(X).sum(0)).ravel()
    idf = np.where(col > 0, n_cells / np.maximum(col, 1e-12), 0.0)
    adata.uns[KEYS.LSI_PROJECTION] = {
        "obsm_key": key_added,
        "features": np.asarray(adata.var_names[sel], dtype=str),
        "idf": idf[sel].astype(np.float64),
        "scale_factor": 1e4,
        **proj,
    }
    return adata.obsm[key_added]


def rna_atac_coembedding(
    rna: AnnData,
    gene_activity: AnnData,
    *,
    rna_layer: str | None = None,
    ga_layer: str | None = None,
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    modality_key: str = "modality",
    random_state: int = 0,
) -> AnnData:
    """Joint AnnData of RNA cells and ATAC cells in gene space (gene activity) with a shared PCA.

    Genes are matched by name (case-insensitive); each modality is library-size normalised, ``log1p`` and
    scaled per gene within its modality; PCA on the shared HVGs. Then run :func:`integrate_ot` with
    ``batch_key=modality_key`` and :func:`transfer_labels`.

    Parameters
    ----------
    rna, gene_activity
        Cells × genes counts of the two modalities.
    rna_layer, ga_layer
        Count layers (``None``: ``X``).
    n_top_genes
        Shared highly variable genes (by mean-variance dispersion over both modalities).
    n_pcs
        PCA components (``obsm['X_pca']``).
    modality_key
        ``obs`` column set to ``"rna"`` / ``"atac"``.
    random_state
        PCA seed.

    Returns
    -------
    anndata.AnnData
        ``n_rna + n_atac`` cells, shared genes, log-normalised scaled ``X``, ``obsm['X_pca']``; the input
        ``obs`` columns are kept (prefixed rows ``rna:``/``atac:`` in the index).

    Raises
    ------
    ValueError
        Fewer than ``n_pcs + 1`` shared genes.

    Examples
    --------
    >>> joint = rna_atac_coembedding(rna, ga)  # doctest: +SKIP
    """
    import anndata as ad
    from sklearn.decomposition import PCA

    r_names = pd.Index(rna.var_names.str.upper())
    g_names = pd.Index(gene_activity.var_names.str.upper())
    shared = r_names.intersection(g_names).unique()
    if len(shared) <= n_pcs:
        raise ValueError(
            f"Only {len(shared)} genes are shared between RNA and gene activity; need > {n_pcs}."
        )

    def _norm(a, layer, names):
        X = get_matrix(a, layer)
        check_counts(X, "RNA counts" if a is rna else "gene-activity counts")
        X = sp.csr_matrix(X, dtype=np.float64)
        pos = pd.Index(names).get_indexer(shared)
        X = X[:, pos]
        lib = np.asarray(X.sum(1)).ravel()
        X = (sp.diags(1e4 / np.maximum(lib, 1.0)) @ X).log1p().toarray()
        return X

    Xr, Xg = _norm(rna, rna_layer, r_names), _norm(gene_activity, ga_layer, g_names)
    both = np.vstack([Xr, Xg])
    mean, var = both.mean(0), both.var(0)
    disp = var / (mean + 1e-8)
    top = np.sort(np.argsort(disp)[::-1][: min(n_top_genes, len(shared))])

    def _scale(X):
        X = X[:, top]
        return (X - X.mean(0)) / (X.std(0) + 1e-8)

    Xs = np.vstack([_scale(Xr), _scale(Xg)]).astype(np.float32)
    obs = pd.concat(
        [rna.obs.assign(**{modality_key: "rna"}), gene_activity.obs.assign(**{modality_key: "atac"})]
    )
    obs.index = [f"rna:{i}" for i in rna.obs_names] + [f"atac:{i}" for i in gene_activity.obs_names]
    joint = ad.AnnData(Xs, obs=obs, var=pd.DataFrame(index=shared[top]))
    joint.obs[modality_key] = pd.Categorical(joint.obs[modality_key])
    k = int(min(n_pcs, min(Xs.shape) - 1))
    joint.obsm["X_pca"] = PCA(k, random_state=random_state).fit_transform(Xs).astype(np.float32)
    return joint
