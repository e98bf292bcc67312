"""k-nearest neighbours: one entry point for the whole suite.

:func:`knn` searches with faiss (exact, CPU or GPU), pynndescent (approximate), scikit-learn (exact) or
``backend="blas"`` (exact: one BLAS product and a partition per chunk of queries, fastest for a few hundred
points) and returns ``(indices int64, distances float32)`` sorted ascending (unless ``sort=False`` with
``"blas"``), with true (not squared) Euclidean or cosine distances. :func:`knn_graph` turns the result into a sparse adjacency matrix.

Examples
--------
>>> import numpy as np
>>> from scvi_ext.neighbors import knn
>>> idx, dist = knn(np.random.default_rng(0).normal(size=(50, 4)), k=5)
>>> idx.shape, idx.dtype, dist.dtype
((50, 5), dtype('int64'), dtype('float32'))
"""

from __future__ import annotations

from ._knn import (
    AUTO_PYNNDESCENT_MIN_OBS,
    BACKENDS,
    GRAPH_MODES,
    METRICS,
    available_backends,
    knn,
    knn_graph,
)

__all__ = [
    "AUTO_PYNNDESCENT_MIN_OBS",
    "BACKENDS",
    "GRAPH_MODES",
    "METRICS",
    "available_backends",
    "knn",
    "knn_graph",
]
