"""Batch-balanced minibatches and scCRAFT's notion of an epoch (sccraft.md §7)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from torch.utils.data import DataLoader, Sampler

from ._constants import DEFAULTS


class BalancedBatchSampler(Sampler[list[int]]):
    """Yield minibatches of dataset positions with the same number of draws from every batch.

    Every epoch (every ``__iter__``), ``cells_per_batch`` cells are drawn from each batch — without
    replacement when the batch has at least that many cells, with replacement otherwise — the
    ``K * cells_per_batch`` draws are pooled, shuffled and cut into minibatches of ``batch_size``
    (the last one holds the remainder). One epoch is therefore ``ceil(K * cells_per_batch /
    batch_size)`` steps, not a pass over the data (the reference's ``generate_balanced_dataloader``).
    The draws of epoch ``e`` use ``numpy.random.default_rng(seed + e)``.

    Parameters
    ----------
    batch_codes
        Batch code of every dataset position (length N).
    cells_per_batch
        Draws per batch per epoch (reference: 512).
    batch_size
        Minibatch size (reference: 1024 = 2 x 512).
    seed
        Base seed; epoch ``e`` is drawn with ``seed + e``.

    Examples
    --------
    >>> s = BalancedBatchSampler(np.array([0] * 10 + [1] * 3), cells_per_batch=4, batch_size=4)
    >>> len(s)
    2
    >>> sorted(len(b) for b in s)
    [4, 4]
    """

    def __init__(
        self,
        batch_codes: Sequence[int] | np.ndarray,
        cells_per_batch: int = DEFAULTS.CELLS_PER_BATCH,
        batch_size: int = DEFAULTS.BATCH_SIZE,
        seed: int = DEFAULTS.SEED,
    ):
        codes = np.asarray(batch_codes).reshape(-1)
        if codes.size == 0:
            raise ValueError("batch_codes is empty: there are no cells to sample.")
        if int(cells_per_batch) < 1:
            raise ValueError(f"cells_per_batch must be >= 1, got {cells_per_batch}.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.cells_per_batch = int(cells_per_batch)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0
        # batches in order of first appearance, as the reference
        _, first = np.unique(codes, return_index=True)
        self.batches = codes[np.sort(first)]
        self.members = [np.flatnonzero(codes == b) for b in self.batches]

    def __len__(self) -> int:
        return math.ceil(len(self.members) * self.cells_per_batch / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose draws the next ``__iter__`` yields (Lightning calls this).

        Parameters
        ----------
        epoch
            Epoch number.
        """
        self.epoch = int(epoch)

    def draw(self, epoch: int) -> np.ndarray:
        """All positions drawn in ``epoch``, pooled and shuffled.

        Parameters
        ----------
        epoch
            Epoch number (selects the seed).

        Returns
        -------
        numpy.ndarray
            ``K * cells_per_batch`` dataset positions.
        """
        rng = np.random.default_rng(self.seed + int(epoch))
        draws = [
            rng.choice(m, size=self.cells_per_batch, replace=len(m) < self.cells_per_batch)
            for m in self.members
        ]
        pooled = np.concatenate(draws)
        return pooled[rng.permutation(pooled.size)]

    def __iter__(self) -> Iterator[list[int]]:
        pooled = self.draw(self.epoch)
        self.epoch += 1
        for start in range(0, pooled.size, self.batch_size):
            yield pooled[start : start + self.batch_size].tolist()


class BalancedBatchDataModule(pl.LightningDataModule):
    """Lightning data module serving :class:`BalancedBatchSampler` minibatches of a registered AnnData.

    There is no validation or test set (the reference trains on all cells; sccraft.md §9.4).

    Parameters
    ----------
    adata_manager
        The model's :class:`scvi.data.AnnDataManager`.
    cells_per_batch, batch_size, seed
        See :class:`BalancedBatchSampler`.
    pin_memory
        Passed to the DataLoader.

    Examples
    --------
    >>> dm = BalancedBatchDataModule(model.adata_manager)  # doctest: +SKIP
    >>> next(iter(dm.train_dataloader()))["X"].shape  # doctest: +SKIP
    torch.Size([1024, 2000])
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        cells_per_batch: int = DEFAULTS.CELLS_PER_BATCH,
        batch_size: int = DEFAULTS.BATCH_SIZE,
        seed: int = DEFAULTS.SEED,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.adata_manager = adata_manager
        codes = adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)
        codes = np.asarray(codes).reshape(-1).astype(np.int64)
        self.sampler = BalancedBatchSampler(codes, cells_per_batch, batch_size, seed)
        self.pin_memory = pin_memory
        n = codes.size
        self.train_idx = np.arange(n)
        self.val_idx = np.zeros(0, dtype=np.int64)
        self.test_idx = np.zeros(0, dtype=np.int64)
        self.n_train, self.n_val = n, 0

    def train_dataloader(self) -> DataLoader:
        """Balanced minibatches (``batch_size=None``: the sampler yields whole minibatches)."""
        dataset = self.adata_manager.create_torch_dataset(self.train_idx)
        return DataLoader(dataset, sampler=self.sampler, batch_size=None, pin_memory=self.pin_memory)

    def val_dataloader(self) -> list:
        """No validation set."""
        return []

    def test_dataloader(self) -> list:
        """No test set."""
        return []


def as_index_tensor(x: torch.Tensor) -> torch.Tensor:
    """Flatten a ``(N, 1)`` registry code tensor to ``(N,)`` long.

    Parameters
    ----------
    x
        Codes as stored by scvi's categorical fields.

    Returns
    -------
    torch.Tensor
        Long codes.

    Examples
    --------
    >>> as_index_tensor(torch.tensor([[1.0], [0.0]]))
    tensor([1, 0])
    """
    return x.reshape(-1).long()
