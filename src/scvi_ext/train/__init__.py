"""Lightning TrainingPlans for scvi-tools modules, and the loss pieces they share.

- :class:`WarmupTrainingPlan`: scvi's plan + named extra-term weights with their own linear warm-ups,
  passed to ``module.loss`` as ``<name>_weight``; thin variants :class:`OTTrainingPlan`,
  :class:`CycleTrainingPlan`, :class:`TripletTrainingPlan`, :class:`PrototypeTrainingPlan`.
- :class:`AdversarialTrainingPlan`: two optimisers, discriminator stored in the module.
- Pure functions: :func:`mine_triplets`, :func:`triplet_loss`, :func:`cycle_latent_distance`,
  :func:`random_other_category`.

Examples
--------
>>> from scvi_ext.train import TermSchedule
>>> TermSchedule(weight=1.0, start=0, n_warmup=4).value(epoch=2, step=0)
0.5
"""

from __future__ import annotations

from ._adversarial import AdversarialTrainingPlan
from ._constants import PLAN_METRICS, SCHEDULE_UNITS, TERM_NAMES
from ._cycle import cycle_latent_distance, random_other_category
from ._plans import (
    CycleTrainingPlan,
    OTTrainingPlan,
    PrototypeTrainingPlan,
    TermWeightsMixin,
    TripletTrainingPlan,
    WarmupTrainingPlan,
)
from ._schedules import TermSchedule, build_term_schedules
from ._triplet import TRIPLET_STRATEGIES, mine_triplets, triplet_loss, unrank_pairs

__all__ = [
    "PLAN_METRICS",
    "SCHEDULE_UNITS",
    "TERM_NAMES",
    "TRIPLET_STRATEGIES",
    "AdversarialTrainingPlan",
    "CycleTrainingPlan",
    "OTTrainingPlan",
    "PrototypeTrainingPlan",
    "TermSchedule",
    "TermWeightsMixin",
    "TripletTrainingPlan",
    "WarmupTrainingPlan",
    "build_term_schedules",
    "cycle_latent_distance",
    "mine_triplets",
    "random_other_category",
    "triplet_loss",
    "unrank_pairs",
]
