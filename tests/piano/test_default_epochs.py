"""PIANO's default epoch count: 200 (paper), more on small data so training makes >= 1,000 steps."""

from __future__ import annotations

import numpy as np
import pytest

from scvi_ext.datasets import simulate_counts
from scvi_ext.piano import PIANO, PIANO_DEFAULTS, default_max_epochs


@pytest.mark.parametrize(
    ("n", "batch", "expected"),
    [(200, 128, 1000), (640, 128, 200), (700, 128, 200), (100_000, 128, 200), (50, 128, 1000), (300, 100, 334)],
)
def test_default_max_epochs(n: int, batch: int, expected: int) -> None:
    assert default_max_epochs(n, batch) == expected
    steps = max(n // min(batch, n), 1)
    assert default_max_epochs(n, batch) * steps >= min(PIANO_DEFAULTS.MIN_TRAIN_STEPS, 200 * steps)


def test_train_uses_default_max_epochs() -> None:
    import torch

    torch.set_num_threads(1)  # 1,000 tiny steps: a second thread only adds synchronisation
    adata = simulate_counts(160, 30, n_batches=2, seed=0)
    PIANO.setup_anndata(adata, batch_key="batch")
    model = PIANO(adata, n_hidden=16, n_latent=4, n_layers=1)
    model.train(accelerator="cpu", progress_bar=False)
    # 160 cells, batch 128 -> 1 step per epoch -> 1,000 epochs
    assert len(model.history["elbo_train"]) == 1000
    assert np.isfinite(model.history["elbo_train"].to_numpy()).all()
