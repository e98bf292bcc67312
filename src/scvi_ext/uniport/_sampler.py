"""Balanced minibatches for uniPort: a fixed number of cells of every dataset in each batch (spec A4)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler
from torch.utils.data._utils.collate import default_convert


class BalancedSourceSampler(Sampler[list[int]]):
    """Yields minibatches (lists of dataset positions) with ``batch_size // S`` rows of each of the S datasets.

    The reference 1.3 draws 256 rows from the concatenation, so a small dataset is often absent from a batch
    (no OT term for it); its GitHub state of Sep 2024 switched to per-dataset batches when a dataset had < 2%
    of the largest one's cells. Here every batch holds ``max(1, batch_size // S)`` rows per dataset, each
    dataset walked in a fresh random order and reshuffled when used up (small datasets repeat within an
    epoch). An epoch has ``n_batches`` batches (default ``n_obs // batch_size``, as the default sampler).

    Parameters
    ----------
    codes
        Dataset code of every position of the training dataset.
    batch_size
        Target minibatch size.
    n_batches
        Batches per epoch (default ``len(codes) // batch_size``, at least 1).

    Examples
    --------
    >>> s = BalancedSourceSampler(np.array([0] * 90 + [1] * 10), batch_size=20)
    >>> batches = list(s)
    >>> len(batches), sorted({int(np.sum(np.array(b) >= 90)) for b in batches})
    (5, [10])
    """

    def __init__(self, codes: Sequence[int] | np.ndarray, batch_size: int, n_batches: int | None = None):
        self.codes = np.asarray(codes).ravel()
        if self.codes.size == 0:
            raise ValueError("codes is empty: no cells to sample.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}.")
        self.groups = [np.flatnonzero(self.codes == s) for s in np.unique(self.codes)]
        self.per_source = max(1, int(batch_size) // len(self.groups))
        self.n_batches = max(1, len(self.codes) // int(batch_size)) if n_batches is None else int(n_batches)

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        # seeded from torch's global RNG, so scvi.settings.seed makes epochs reproducible
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        orders = [rng.permutation(g) for g in self.groups]
        pos = [0] * len(self.groups)
        for _ in range(self.n_batches):
            batch = []
            for i, g in enumerate(self.groups):
                take = []
                while len(take) < self.per_source:
                    if pos[i] >= len(orders[i]):
                        orders[i], pos[i] = rng.permutation(g), 0
                    n = min(self.per_source - len(take), len(orders[i]) - pos[i])
                    take.extend(orders[i][pos[i] : pos[i] + n].tolist())
                    pos[i] += n
                batch.extend(take)
            yield batch


def unwrap_batch(items: list) -> dict:
    """``collate_fn`` for a sampler that yields whole batches: the one fetched item, arrays -> tensors.

    Examples
    --------
    >>> unwrap_batch([{"X": np.zeros((2, 3))}])["X"].shape
    torch.Size([2, 3])
    """
    return default_convert(items[0])
