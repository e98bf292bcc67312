"""Simulated multi-batch single-cell data with known cell types and batch effects.

Counts follow a Gamma-Poisson (negative-binomial) model: each cell type has a gene-expression profile,
each batch multiplies every gene by a log-normal factor and shifts the library size, and each cell draws
its library size and NB counts. Cells are generated in chunks, so a million cells fit in memory as CSR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData

BATCH_KEY = "batch"
LABELS_KEY = "cell_type"
_CHUNK = 20_000


def _check_positive(**kwargs: float) -> None:
    for name, value in kwargs.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value!r}.")


def simulate_counts(
    n_cells: int = 10_000,
    n_genes: int = 2_000,
    n_batches: int = 4,
    n_cell_types: int = 8,
    *,
    batch_effect: float = 0.5,
    de_fraction: float = 0.1,
    de_scale: float = 1.5,
    library_size: float = 2_000.0,
    theta: float = 10.0,
    seed: int = 0,
) -> AnnData:
    """Simulate raw counts for ``n_cells`` cells with known cell types and multiplicative batch effects.

    Parameters
    ----------
    n_cells, n_genes
        Size of the count matrix.
    n_batches, n_cell_types
        Number of batches and of cell types (cell types are spread evenly over batches, with
        Dirichlet-distributed proportions per batch).
    batch_effect
        Standard deviation of the per-(batch, gene) log fold change; 0 gives no batch effect on expression.
    de_fraction, de_scale
        Fraction of genes differentially expressed per cell type and the s.d. of their log fold change.
    library_size
        Median total counts per cell.
    theta
        NB inverse dispersion.
    seed
        Random seed.

    Returns
    -------
    AnnData
        ``X`` = counts (CSR float32), ``obs['batch']``, ``obs['cell_type']`` (categoricals),
        ``uns['simulation']`` = the parameters.

    Examples
    --------
    >>> adata = simulate_counts(n_cells=500, n_genes=100, n_batches=2, n_cell_types=3, seed=1)
    >>> adata.shape
    (500, 100)
    """
    import anndata

    _check_positive(n_cells=n_cells, n_genes=n_genes, n_batches=n_batches, n_cell_types=n_cell_types)
    _check_positive(library_size=library_size, theta=theta)
    if batch_effect < 0 or not 0 <= de_fraction <= 1:
        raise ValueError("batch_effect must be >= 0 and de_fraction within [0, 1].")
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 1.0, n_genes)
    de = rng.random((n_cell_types, n_genes)) < de_fraction
    log_profiles = base + de * rng.normal(0.0, de_scale, (n_cell_types, n_genes))
    batch_log_fc = rng.normal(0.0, batch_effect, (n_batches, n_genes)) if batch_effect > 0 else np.zeros(
        (n_batches, n_genes)
    )
    batch_log_lib = rng.normal(0.0, 0.3, n_batches)
    type_props = rng.dirichlet(np.full(n_cell_types, 5.0), size=n_batches)

    batch = rng.integers(0, n_batches, n_cells)
    cell_type = np.empty(n_cells, dtype=np.int64)
    for b in range(n_batches):
        idx = np.flatnonzero(batch == b)
        cell_type[idx] = rng.choice(n_cell_types, size=idx.size, p=type_props[b])

    # per (type, batch) proportions over genes
    logits = log_profiles[:, None, :] + batch_log_fc[None, :, :]
    props = np.exp(logits - logits.max(-1, keepdims=True))
    props /= props.sum(-1, keepdims=True)
    props = props.astype(np.float32)

    chunks = []
    for start in range(0, n_cells, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n_cells))
        lib = library_size * np.exp(batch_log_lib[batch[sl]] + rng.normal(0.0, 0.3, sl.stop - sl.start))
        mu = props[cell_type[sl], batch[sl]] * lib[:, None].astype(np.float32)
        rate = mu * rng.gamma(theta, 1.0 / theta, mu.shape).astype(np.float32)
        chunks.append(sp.csr_matrix(rng.poisson(rate).astype(np.float32)))
    X = sp.vstack(chunks, format="csr")

    obs = pd.DataFrame(
        {
            BATCH_KEY: pd.Categorical([f"batch{b}" for b in batch]),
            LABELS_KEY: pd.Categorical([f"type{t}" for t in cell_type]),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene{g}" for g in range(n_genes)])
    adata = anndata.AnnData(X=X, obs=obs, var=var)
    adata.uns["simulation"] = {
        "batch_effect": batch_effect,
        "de_fraction": de_fraction,
        "de_scale": de_scale,
        "library_size": library_size,
        "theta": theta,
        "seed": seed,
    }
    return adata


def simulate_embedding(
    n_cells: int = 10_000,
    n_dims: int = 30,
    n_batches: int = 4,
    n_cell_types: int = 8,
    *,
    batch_shift: float = 2.0,
    cluster_sd: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate a low-dimensional embedding (e.g. a PCA) of batched cells: Gaussian cell-type clusters
    plus a per-batch offset and a small per-batch rotation.

    Parameters
    ----------
    n_cells, n_dims
        Shape of the embedding.
    n_batches, n_cell_types
        Number of batches and cell types.
    batch_shift
        Norm of each batch's offset vector, in units of ``cluster_sd``.
    cluster_sd
        Within-cluster standard deviation (cluster centres have s.d. 5).
    seed
        Random seed.

    Returns
    -------
    tuple of numpy.ndarray
        ``(X float32 (n_cells, n_dims), batch int64, cell_type int64)``.

    Examples
    --------
    >>> X, batch, cell_type = simulate_embedding(n_cells=100, n_dims=5, seed=0)
    >>> X.shape
    (100, 5)
    """
    _check_positive(n_cells=n_cells, n_dims=n_dims, n_batches=n_batches, n_cell_types=n_cell_types)
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 5.0, (n_cell_types, n_dims))
    offsets = rng.normal(0.0, 1.0, (n_batches, n_dims))
    offsets *= batch_shift * cluster_sd / np.linalg.norm(offsets, axis=1, keepdims=True)
    batch = rng.integers(0, n_batches, n_cells)
    cell_type = rng.integers(0, n_cell_types, n_cells)
    X = np.empty((n_cells, n_dims), dtype=np.float32)
    for start in range(0, n_cells, 10 * _CHUNK):
        sl = slice(start, min(start + 10 * _CHUNK, n_cells))
        X[sl] = centres[cell_type[sl]] + offsets[batch[sl]] + rng.normal(0.0, cluster_sd, (sl.stop - sl.start, n_dims))
    return X, batch, cell_type
