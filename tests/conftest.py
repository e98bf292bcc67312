"""Shared fixtures: seeding, CPU only, paths to the real datasets in ../shared/data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_everything():
    """Seed python, numpy and torch (when already imported or importable) before every test."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - seeds code that uses the legacy global RNG
    try:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; tests that need it fail loudly in CI rather than silently skipping."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"{SHARED_DATA} is missing; CI must run with ../shared beside the clone.")
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pbmc_counts(shared_data):
    """700 cells x 765 genes, raw counts, batch key ``lane`` (8), labels ``bulk_labels`` (10)."""
    import anndata as ad

    return ad.read_h5ad(shared_data / "pbmc68k_reduced_counts" / "pbmc68k_reduced_counts.h5ad")


@pytest.fixture(scope="session")
def pancreas_counts(shared_data):
    """350 cells x 12474 genes, human + mouse, batch ``sample`` (6), ``species`` (2), labels ``cell_type``."""
    import anndata as ad

    return ad.read_h5ad(shared_data / "cider_pancreas_baron" / "cider_pancreas_baron.h5ad")
