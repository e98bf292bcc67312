"""Training plan and batch-balanced data splitter of the SCBIOT model (spec §4.6, §6.3)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from scvi.dataloaders import DataSplitter
from torch.utils.data import DataLoader, Sampler

from ..train import PrototypeTrainingPlan
from ._constants import (
    CENTER_RAMP_EPOCHS,
    LR_WARMUP_MAX_FRACTION,
    LR_WARMUP_STEPS,
    REGISTRY_KEYS,
    SUP_RAMP_EPOCHS,
    VAE_DEFAULTS,
)


class SCBIOTTrainingPlan(PrototypeTrainingPlan):
    """AdamW + linear warm-up (100 steps, at most 10 % of the run) + cosine decay to 0, term ramps (spec §4.4, §4.6).

    The scheduled terms (passed to ``SCBIOTVAE.loss`` as ``<name>_weight``): ``prototype`` (DEC, λ_clust),
    ``center`` (ramp ``min(1, epoch/8)``), ``margin`` and ``sup`` (ramp ``min(1, epoch/5)``), 0-based epochs.

    Parameters
    ----------
    module
        A :class:`~scvi_ext.scbiot._module.SCBIOTVAE`.
    lr
        Learning rate (1e-2).
    weight_decay
        AdamW weight decay (0).
    n_warmup_steps
        Linear LR warm-up steps (100).
    max_warmup_fraction
        Upper bound on the warm-up as a fraction of the run's optimiser steps (0.1; ``None``: no bound, the
        v1.0.7 schedule). Without a bound, a run shorter than ``n_warmup_steps`` never reaches ``lr`` and has
        no cosine phase: on small data (one step per epoch) the model stays undertrained.
    constant_prototype_lr
        Keep the prototypes' learning rate at ``lr`` (no warm-up, no cosine) as v1.0.7 did in practice: its
        prototype parameter group is added after the scheduler is built, so (with the torch of its time) the
        scheduler left it alone. ``False`` schedules the prototypes with the network.
    **kwargs
        :class:`scvi_ext.train.PrototypeTrainingPlan` / scvi ``TrainingPlan`` arguments.

    Examples
    --------
    >>> model.train(max_epochs=80, plan_kwargs={"lr": 5e-3})  # doctest: +SKIP
    """

    _default_term_weights: ClassVar[dict[str, float]] = {
        "prototype": VAE_DEFAULTS["lam_clust"],
        "center": VAE_DEFAULTS["lam_center"],
        "margin": VAE_DEFAULTS["lam_margin"],
        "sup": VAE_DEFAULTS["lam_sup"],
    }

    def __init__(
        self,
        module,
        *,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        n_warmup_steps: int = LR_WARMUP_STEPS,
        max_warmup_fraction: float | None = LR_WARMUP_MAX_FRACTION,
        constant_prototype_lr: bool = False,
        term_warmup: dict | None = None,
        **kwargs: Any,
    ):
        warm = {
            "center": (0, CENTER_RAMP_EPOCHS),
            "margin": (0, SUP_RAMP_EPOCHS),
            "sup": (0, SUP_RAMP_EPOCHS),
        }
        warm.update(term_warmup or {})
        kwargs.setdefault("n_epochs_kl_warmup", None)
        super().__init__(module, lr=lr, weight_decay=weight_decay, term_warmup=warm, **kwargs)
        if max_warmup_fraction is not None and not 0 < max_warmup_fraction <= 1:
            raise ValueError(f"max_warmup_fraction must be in (0, 1] or None, got {max_warmup_fraction!r}.")
        self.n_warmup_steps = int(n_warmup_steps)
        self.max_warmup_fraction = max_warmup_fraction
        self.constant_prototype_lr = bool(constant_prototype_lr)

    def warmup_steps(self, total_steps: int) -> int:
        """Effective warm-up length of a run with ``total_steps`` optimiser steps.

        Parameters
        ----------
        total_steps
            Optimiser steps of the whole run.

        Returns
        -------
        int
            ``n_warmup_steps``, bounded by ``ceil(max_warmup_fraction * total_steps)`` when that is set.

        Examples
        --------
        >>> from types import SimpleNamespace
        >>> cfg = SimpleNamespace(n_warmup_steps=100, max_warmup_fraction=0.1)  # the default settings
        >>> SCBIOTTrainingPlan.warmup_steps(cfg, 15), SCBIOTTrainingPlan.warmup_steps(cfg, 5000)
        (2, 100)
        """
        warm = self.n_warmup_steps
        if self.max_warmup_fraction is not None:
            warm = min(warm, max(1, math.ceil(self.max_warmup_fraction * total_steps)))
        return max(1, warm)

    def configure_optimizers(self):
        """AdamW over all module parameters (prototypes included) with warm-up + cosine LR (per step)."""
        protos = self.module.prototypes
        if self.constant_prototype_lr:
            rest = [p for p in self.module.parameters() if p is not protos]
            groups = [{"params": rest}, {"params": [protos]}]
        else:
            groups = [{"params": list(self.module.parameters())}]
        opt = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = self.warmup_steps(total)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            prog = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1.0 + math.cos(math.pi * prog))

        lambdas = [factor] + [lambda step: 1.0] * (len(groups) - 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class BalancedBatchSampler(Sampler):
    """Each epoch: ``⌈n/B⌉`` positions per batch drawn with replacement, shuffled, in minibatches (spec §4.6).

    Parameters
    ----------
    batch_codes
        Batch code of every training cell (positions index this array).
    batch_size
        Minibatch size.
    seed
        Base seed (advanced every epoch).

    Examples
    --------
    >>> s = BalancedBatchSampler(np.r_[np.zeros(90, int), np.ones(10, int)], batch_size=50)
    >>> sum(len(b) for b in s)
    100
    """

    def __init__(self, batch_codes: np.ndarray, batch_size: int, seed: int = 42):
        self.codes = np.asarray(batch_codes)
        self.batch_size = int(batch_size)
        self.groups = [np.flatnonzero(self.codes == c) for c in np.unique(self.codes)]
        self.per = int(math.ceil(len(self.codes) / max(1, len(self.groups))))
        self.seed = seed
        self.epoch = 0

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        draw = np.concatenate([rng.choice(g, self.per, replace=True) for g in self.groups])
        rng.shuffle(draw)
        for s in range(0, len(draw), self.batch_size):
            yield draw[s : s + self.batch_size].tolist()

    def __len__(self) -> int:
        return int(math.ceil(self.per * len(self.groups) / self.batch_size))


class BalancedDataSplitter(DataSplitter):
    """scvi :class:`~scvi.dataloaders.DataSplitter` whose training loader samples batches evenly."""

    def __init__(self, *args, balanced: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.balanced = balanced

    def train_dataloader(self):
        """Training loader with :class:`BalancedBatchSampler` (or scvi's shuffling loader)."""
        if not self.balanced:
            return super().train_dataloader()
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()[
            self.train_idx
        ]
        bs = int(self.data_loader_kwargs.get("batch_size") or 128)
        dataset = self.adata_manager.create_torch_dataset(indices=self.train_idx)
        # the sampler yields lists of positions; batch_size=None disables torch's automatic batching (as scvi)
        return DataLoader(
            dataset, sampler=BalancedBatchSampler(codes, bs), batch_size=None, pin_memory=self.pin_memory
        )
