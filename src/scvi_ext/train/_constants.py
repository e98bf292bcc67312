"""Names used by the training plans: term names, logged metric names, schedule units."""

from __future__ import annotations

from typing import NamedTuple


class _TermNames(NamedTuple):
    OT: str = "ot"
    CYCLE: str = "cycle"
    TRIPLET: str = "triplet"
    PROTOTYPE: str = "prototype"


class _PlanMetrics(NamedTuple):
    # logged as f"{name}_train" / f"{name}_validation" (epoch means), like scvi's extra metrics
    DISCRIMINATOR_LOSS: str = "discriminator_loss"
    ADVERSARIAL_LOSS: str = "adversarial_loss"
    DISCRIMINATOR_ACCURACY: str = "discriminator_accuracy"
    # logged as is (epoch mean of the per-step value)
    ADVERSARIAL_WEIGHT: str = "adversarial_weight"


class _Units(NamedTuple):
    EPOCH: str = "epoch"
    STEP: str = "step"


TERM_NAMES = _TermNames()
"""Extra-loss term names of the thin plans; the module receives ``<name>_weight``."""
PLAN_METRICS = _PlanMetrics()
"""Metric names the adversarial plan logs (see :class:`~scvi_ext.train.AdversarialTrainingPlan`)."""
SCHEDULE_UNITS = _Units()
"""Units of a warm-up schedule."""
WEIGHT_SUFFIX = "_weight"
