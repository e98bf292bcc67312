"""Lightning training plan of PIANO (the compatibility path; the fast loop is in ``_fast.py``)."""

from __future__ import annotations

from scvi.module.base import BaseModuleClass
from scvi.train import TrainingPlan

from ._constants import PIANO_DEFAULTS as D


class PIANOTrainingPlan(TrainingPlan):
    """scvi's :class:`~scvi.train.TrainingPlan` with PIANO's defaults (piano.md §2.1, §5.1).

    AdamW (lr 2e-4, no weight decay, ``eps=1e-8`` as torch's default), KL weight warmed up linearly **per
    step** from ``min_kl_weight`` to ``max_kl_weight`` over ``n_steps_kl_warmup`` steps (the model passes
    ``400 * steps_per_epoch``, the paper's schedule) and capped afterwards. The optional adversarial term is
    added inside the module's loss (gradient reversal, one optimiser).

    Parameters
    ----------
    module
        A :class:`~scvi_ext.piano.PIANOModule`.
    lr, weight_decay, eps
        AdamW settings.
    n_steps_kl_warmup, n_epochs_kl_warmup, max_kl_weight, min_kl_weight
        KL schedule (see :func:`scvi.train._trainingplans._compute_kl_weight`).
    **kwargs
        Passed to :class:`~scvi.train.TrainingPlan`.

    Examples
    --------
    >>> plan = PIANOTrainingPlan(module, n_steps_kl_warmup=400 * 10)  # doctest: +SKIP
    """

    def __init__(
        self,
        module: BaseModuleClass,
        *,
        lr: float = D.LR,
        weight_decay: float = D.WEIGHT_DECAY,
        eps: float = 1e-8,
        n_steps_kl_warmup: int | None = None,
        n_epochs_kl_warmup: int | None = None,
        max_kl_weight: float = D.MAX_KL_WEIGHT,
        min_kl_weight: float = D.MIN_KL_WEIGHT,
        **kwargs,
    ):
        kwargs.setdefault("optimizer", "AdamW")
        super().__init__(
            module,
            lr=lr,
            weight_decay=weight_decay,
            eps=eps,
            n_steps_kl_warmup=n_steps_kl_warmup,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            max_kl_weight=max_kl_weight,
            min_kl_weight=min_kl_weight,
            **kwargs,
        )
