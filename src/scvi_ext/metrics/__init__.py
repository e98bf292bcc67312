"""Integration metrics.

Fast CPU metrics (kNN batch entropy, iLISI-like mixing, label silhouette, kNN label accuracy, trustworthiness
from kNN lists) for tests and quick checks, and :func:`scib_benchmark`, a wrapper around scib-metrics' ``Benchmarker`` used by the
benchmark runner (needs the ``bench`` extra).

Examples
--------
>>> import numpy as np
>>> from scvi_ext.metrics import knn_label_accuracy
>>> X = np.r_[np.zeros((10, 2)), np.ones((10, 2)) * 5] + np.random.default_rng(0).normal(size=(20, 2)) * 0.1
>>> knn_label_accuracy(X, np.repeat([0, 1], 10), k=3)
1.0
"""

from __future__ import annotations

from ._fast import (
    batch_entropy,
    batch_silhouette,
    fast_scores,
    ilisi_knn,
    knn_label_accuracy,
    knn_transfer_accuracy,
    label_silhouette,
)
from ._scib import scib_benchmark
from ._trust import trustworthiness

__all__ = [
    "batch_entropy",
    "batch_silhouette",
    "fast_scores",
    "ilisi_knn",
    "knn_label_accuracy",
    "knn_transfer_accuracy",
    "label_silhouette",
    "scib_benchmark",
    "trustworthiness",
]
