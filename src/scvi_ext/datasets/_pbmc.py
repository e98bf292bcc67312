"""The demo dataset: scanpy's bundled pbmc68k_reduced with its raw counts reconstructed (offline)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData

BATCH_KEY = "lane"
LABELS_KEY = "bulk_labels"
LOGNORM_LAYER = "lognorm_raw"


def pbmc68k_reduced_counts() -> AnnData:
    """Load 700 PBMCs (10x, Zheng et al. 2017) with integer counts, batches = the 8 10x lanes.

    The data ship inside scanpy (``scanpy.datasets.pbmc68k_reduced``, BSD-3; no network). Its ``raw.X`` is
    ``log1p(counts / n_counts * 1e4)`` with ``n_counts`` over all genes, so the counts are recovered exactly as
    ``round(expm1(raw.X) * n_counts / 1e4)``.

    Returns
    -------
    AnnData
        700 cells x 765 genes; ``X`` = counts (CSR, float32); ``obs['lane']`` (8 lanes, the barcode suffix),
        ``obs['bulk_labels']`` (10 cell-type labels), ``layers['lognorm_raw']`` = the original ``raw.X``,
        ``obsm['X_umap']`` the published UMAP.

    Examples
    --------
    >>> adata = pbmc68k_reduced_counts()
    >>> adata.shape, adata.obs["lane"].nunique()
    ((700, 765), 8)
    """
    import anndata
    import scanpy as sc

    src = sc.datasets.pbmc68k_reduced()
    lognorm = sp.csr_matrix(src.raw.X, dtype=np.float32)
    n_counts = src.obs["n_counts"].to_numpy(dtype=np.float64)
    counts = lognorm.copy().astype(np.float64)
    counts.data = np.expm1(counts.data)
    counts = sp.diags(n_counts / 1e4) @ counts
    counts.data = np.rint(counts.data)
    counts = sp.csr_matrix(counts, dtype=np.float32)
    counts.eliminate_zeros()

    obs = src.obs[[LABELS_KEY, "n_genes", "percent_mito", "n_counts", "phase", "louvain"]].copy()
    obs[BATCH_KEY] = np.asarray([name.rsplit("-", 1)[-1] for name in src.obs_names])
    obs[BATCH_KEY] = obs[BATCH_KEY].astype("category")
    adata = anndata.AnnData(X=counts, obs=obs, var=src.raw.var[[]].copy())
    adata.layers[LOGNORM_LAYER] = lognorm
    adata.obsm["X_umap"] = np.asarray(src.obsm["X_umap"])
    return adata
