"""The shared preprocessing pipeline (the one ``../shared/reference-results.md`` uses)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .._constants import DEFAULTS, OBSM_KEYS
from .._validation import check_counts, check_n_categories, check_nonempty, get_matrix

if TYPE_CHECKING:
    from anndata import AnnData

COUNTS_LAYER = "counts"


def prepare(
    adata: AnnData,
    batch_key: str,
    *,
    layer: str | None = None,
    n_hvg: int = DEFAULTS.N_HVG,
    n_pcs: int = DEFAULTS.N_PCS,
    seed: int = DEFAULTS.SEED,
) -> AnnData:
    """Return a preprocessed copy of ``adata`` ready for every method of the suite.

    Raw counts -> ``filter_genes(min_cells=1)`` -> ``normalize_total(1e4)`` + ``log1p`` -> ``n_hvg`` highly
    variable genes (``flavor='seurat'`` per ``batch_key``; all genes if there are fewer) -> PCA with ``n_pcs``
    components (arpack, unscaled). The copy keeps the counts in ``layers['counts']``, log-normalised values in
    ``X`` and the PCA in ``obsm['X_pca']``. ``adata`` itself is not modified.

    Parameters
    ----------
    adata
        AnnData with raw counts in ``X`` or in ``layers[layer]``.
    batch_key
        ``obs`` column with the batches (at least two).
    layer
        Layer holding the counts; ``None`` uses ``X``.
    n_hvg
        Number of highly variable genes.
    n_pcs
        Number of principal components.
    seed
        Random seed for the PCA solver.

    Returns
    -------
    AnnData
        New object with ``layers['counts']``, log-normalised ``X`` and ``obsm['X_pca']``.

    Examples
    --------
    >>> from scvi_ext.datasets import pbmc68k_reduced_counts
    >>> ad = prepare(pbmc68k_reduced_counts(), batch_key="lane")  # doctest: +SKIP
    >>> ad.obsm["X_pca"].shape  # doctest: +SKIP
    (700, 30)
    """
    import anndata
    import scanpy as sc

    check_nonempty(adata)
    check_n_categories(adata, batch_key, minimum=2, argument="batch_key")
    X = get_matrix(adata, layer)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    check_counts(X, where)

    X = sp.csr_matrix(X, dtype=np.float32)
    out = anndata.AnnData(X=X, obs=adata.obs.copy(), var=adata.var[[]].copy())
    out.obs[batch_key] = out.obs[batch_key].astype(str).astype("category")
    sc.pp.filter_genes(out, min_cells=1)
    if out.n_vars == 0:
        raise ValueError(f"{where} has no gene with a non-zero count.")
    out.layers[COUNTS_LAYER] = out.X.copy()
    sc.pp.normalize_total(out, target_sum=DEFAULTS.TARGET_SUM)
    sc.pp.log1p(out)
    if out.n_vars > n_hvg:
        sc.pp.highly_variable_genes(out, n_top_genes=n_hvg, flavor="seurat", batch_key=batch_key)
        out = out[:, out.var["highly_variable"].to_numpy()].copy()
    n_comps = min(n_pcs, out.n_obs - 1, out.n_vars - 1)
    sc.pp.pca(out, n_comps=n_comps, svd_solver="arpack", random_state=seed, zero_center=True)
    out.obsm[OBSM_KEYS.PCA] = np.asarray(out.obsm[OBSM_KEYS.PCA], dtype=np.float32)
    return out
