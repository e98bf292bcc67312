"""Benchmark integration methods on one dataset; thin entry point over :mod:`scvi_ext.benchmark`.

Example (from the repository root)::

    .venv/bin/python benchmarks/run.py --dataset ../shared/data/pbmc68k_reduced_counts/pbmc68k_reduced_counts.h5ad \\
        --batch-key lane --labels-key bulk_labels --methods pca,harmony,scvi --name pbmc68k_reduced_counts
"""

import sys

from scvi_ext.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
