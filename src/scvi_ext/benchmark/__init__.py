"""Benchmark runner: time and score integration methods on one dataset with scib-metrics.

``scvi-ext benchmark ...`` and ``benchmarks/run.py ...`` both call :func:`main`; see ``benchmarks/README.md``.
Needs the ``bench`` extra (scib-metrics, harmonypy).

Examples
--------
>>> from scvi_ext.benchmark import main
>>> main(["--dataset", "data.h5ad", "--batch-key", "batch", "--labels-key", "cell_type",
...       "--methods", "pca,harmony"])  # doctest: +SKIP
0
"""

from __future__ import annotations

from ._runner import build_parser, main

__all__ = ["build_parser", "main"]
