"""Datasets: the offline demo dataset and a simulator of multi-batch counts with known truth.

Examples
--------
>>> from scvi_ext.datasets import pbmc68k_reduced_counts, simulate_counts
>>> adata = pbmc68k_reduced_counts()  # doctest: +SKIP
>>> sim = simulate_counts(n_cells=1000, n_genes=200, n_batches=3, seed=0)
>>> sim.obs["batch"].nunique()
3
"""

from __future__ import annotations

from ._pbmc import pbmc68k_reduced_counts
from ._simulate import simulate_counts, simulate_embedding

__all__ = ["pbmc68k_reduced_counts", "simulate_counts", "simulate_embedding"]
