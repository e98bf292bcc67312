"""Plots people look at: UMAPs of an embedding coloured by batch and cell type."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._constants import DEFAULTS

if TYPE_CHECKING:
    from anndata import AnnData


def umap_coordinates(embedding: np.ndarray, *, n_neighbors: int = DEFAULTS.N_NEIGHBORS, seed: int = 0) -> np.ndarray:
    """Compute 2-D UMAP coordinates of an embedding (scanpy's neighbours + UMAP).

    Parameters
    ----------
    embedding
        Cells x dims.
    n_neighbors
        Neighbourhood size.
    seed
        UMAP random state.

    Returns
    -------
    numpy.ndarray
        Cells x 2.

    Examples
    --------
    >>> xy = umap_coordinates(np.random.default_rng(0).normal(size=(100, 5)))  # doctest: +SKIP
    """
    import anndata
    import scanpy as sc

    tmp = anndata.AnnData(np.zeros((embedding.shape[0], 1), dtype=np.float32))
    tmp.obsm["emb"] = np.asarray(embedding, dtype=np.float32)
    sc.pp.neighbors(tmp, use_rep="emb", n_neighbors=min(n_neighbors, embedding.shape[0] - 1), random_state=seed)
    sc.tl.umap(tmp, random_state=seed)
    return np.asarray(tmp.obsm["X_umap"])


def plot_umaps(
    adata: AnnData,
    obsm_keys: Sequence[str],
    color: Sequence[str],
    path: str | Path,
    *,
    seed: int = 0,
) -> Path:
    """Draw one row per embedding and one column per ``obs`` column, and save it as a PNG.

    Parameters
    ----------
    adata
        AnnData holding the embeddings in ``obsm`` and the colour columns in ``obs``.
    obsm_keys
        Embeddings to show (UMAP is computed for each).
    color
        ``obs`` columns to colour by (e.g. batch and cell type).
    path
        Output PNG path.
    seed
        UMAP random state.

    Returns
    -------
    pathlib.Path
        The written file.

    Examples
    --------
    >>> plot_umaps(adata, ["X_pca"], ["lane", "bulk_labels"], "umap.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_rows, n_cols = len(obsm_keys), len(color)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.2 * n_cols, 4.4 * n_rows), squeeze=False)
    for r, key in enumerate(obsm_keys):
        xy = umap_coordinates(adata.obsm[key], seed=seed)
        for c, col in enumerate(color):
            ax = axes[r, c]
            values = adata.obs[col].astype("category")
            cmap = plt.get_cmap("tab20" if len(values.cat.categories) > 10 else "tab10")
            for i, cat in enumerate(values.cat.categories):
                m = (values == cat).to_numpy()
                ax.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(i % cmap.N), label=str(cat), linewidths=0)
            ax.set_title(f"{key.removeprefix('X_')} — {col}")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
