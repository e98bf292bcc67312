"""TrainingPlans with named extra-loss weights on their own warm-up schedules."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from scvi.module.base import BaseModuleClass
from scvi.train import TrainingPlan

from ._constants import TERM_NAMES, WEIGHT_SUFFIX
from ._schedules import TermSchedule, build_term_schedules


def _batch_size(batch: Mapping[str, Any]) -> int:
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 1


class TermWeightsMixin:
    """Named loss-term weights with linear warm-ups, passed to ``module.loss`` as ``<name>_weight``.

    Mix into a :class:`scvi.train.TrainingPlan` subclass and call :meth:`_setup_term_weights` at the end
    of ``__init__`` and :meth:`_update_term_weights` at the start of every training step. Subclasses set
    ``_default_term_weights`` to declare their terms.
    """

    _default_term_weights: ClassVar[dict[str, float]] = {}

    def _setup_term_weights(
        self,
        term_weights: Mapping[str, float] | None,
        term_warmup: Mapping[str, tuple | TermSchedule | None] | None,
        term_warmup_unit: Literal["epoch", "step"],
        term_loss_kwargs: Mapping[str, str] | None,
    ) -> None:
        user_weights = dict(term_weights or {})
        weights = {**self._default_term_weights, **user_weights}
        term_loss_kwargs = dict(term_loss_kwargs or {})
        unknown = set(term_loss_kwargs) - set(weights)
        if unknown:
            raise KeyError(
                f"term_loss_kwargs names {sorted(unknown)} that are not terms ({sorted(weights)})."
            )
        self.term_loss_kwargs = {
            name: term_loss_kwargs.get(name, f"{name}{WEIGHT_SUFFIX}") for name in weights
        }
        # a `<name>_weight=` plan kwarg (which scvi would forward as a constant loss kwarg) sets the term's weight
        for name, kwarg in self.term_loss_kwargs.items():
            if kwarg in self.loss_kwargs:
                if name in user_weights:
                    raise ValueError(
                        f"The weight of term {name!r} was given twice: term_weights[{name!r}] and {kwarg}=; keep one."
                    )
                weights[name] = float(self.loss_kwargs.pop(kwarg))
        params = inspect.signature(self.module.loss).parameters
        takes_var_kw = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
        missing = [kw for kw in self.term_loss_kwargs.values() if kw not in params and not takes_var_kw]
        if missing:
            raise ValueError(
                f"{type(self.module).__name__}.loss() does not accept {missing}; the plan passes each term's "
                "current weight as a keyword argument (add the argument, or map the term to an existing argument "
                "with term_loss_kwargs={term: argument_name})."
            )
        self.term_schedules = build_term_schedules(weights, term_warmup, term_warmup_unit)
        for name, value in self.current_term_weights(epoch=0, step=0).items():
            self.loss_kwargs[self.term_loss_kwargs[name]] = value

    def _schedule_step(self) -> int:
        """Training steps taken so far (what step-based schedules count)."""
        return int(self.global_step)

    def current_term_weights(self, epoch: int | None = None, step: int | None = None) -> dict[str, float]:
        """Scheduled weight of every term.

        Parameters
        ----------
        epoch, step
            Where to evaluate the schedules; default: the plan's current epoch and step.

        Returns
        -------
        dict
            ``{term name: weight}``.
        """
        epoch = self.current_epoch if epoch is None else epoch
        step = self._schedule_step() if step is None else step
        return {name: s.value(epoch, step) for name, s in self.term_schedules.items()}

    def _update_term_weights(self, batch: Mapping[str, Any], log: bool = True) -> dict[str, float]:
        values = self.current_term_weights()
        n_obs = _batch_size(batch)
        for name, value in values.items():
            self.loss_kwargs[self.term_loss_kwargs[name]] = value
            if log:
                self.log(f"{name}{WEIGHT_SUFFIX}", value, on_step=False, on_epoch=True, batch_size=n_obs)
        return values

    def _call_module_hook(self, hook_name: str, **kwargs: Any) -> None:
        """Call ``module.<hook_name>(plan=self, epoch=..., global_step=..., **kwargs)`` if the module has it."""
        hook = getattr(self.module, hook_name, None)
        if callable(hook):
            with torch.no_grad():
                hook(plan=self, epoch=self.current_epoch, global_step=self.global_step, **kwargs)


class WarmupTrainingPlan(TermWeightsMixin, TrainingPlan):
    """scvi's :class:`~scvi.train.TrainingPlan` plus named extra-term weights with their own warm-ups.

    Everything of scvi's plan is kept (optimiser options, KL warm-up via ``n_epochs_kl_warmup`` /
    ``n_steps_kl_warmup`` / ``max_kl_weight``, LR on plateau, metrics). In addition, at every training
    step the current weight of each term in ``term_weights`` is passed to ``module.loss`` as
    ``<name>_weight=<float>`` (exactly like scvi passes ``kl_weight``) and logged as ``<name>_weight``
    (an epoch mean, so it appears in ``model.history``). Validation uses the last training weights.

    Parameters
    ----------
    module
        A :class:`scvi.module.base.BaseModuleClass` whose ``loss`` accepts the ``<name>_weight`` arguments.
    term_weights
        ``{name: final weight}``; merged over the class defaults (e.g. ``{"ot": 1.0}`` for
        :class:`OTTrainingPlan`). A plain ``<name>_weight=`` plan kwarg is read as the term's weight.
    term_warmup
        ``{name: (start, n_warmup)}``, ``(start, n_warmup, unit)``, a :class:`TermSchedule` or ``None``
        (constant). See :class:`TermSchedule` for the shape of the ramp.
    term_warmup_unit
        Unit of 2-tuples in ``term_warmup``: ``"epoch"`` or ``"step"``.
    term_loss_kwargs
        Map a term to a differently named loss argument, e.g. ``{"cycle": "z_distance_cycle_weight"}``.
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``weight_decay``, ``eps``, ``optimizer``,
        ``n_epochs_kl_warmup``, ``max_kl_weight``, ... and extra constant loss kwargs).

    Examples
    --------
    >>> plan = WarmupTrainingPlan(module, term_weights={"ot": 1.0}, term_warmup={"ot": (2, 5)})  # doctest: +SKIP
    >>> model.train(max_epochs=10, plan_kwargs={"term_weights": {"ot": 0.5}})  # via _training_plan_cls  # doctest: +SKIP
    """

    def __init__(
        self,
        module: BaseModuleClass,
        *,
        term_weights: Mapping[str, float] | None = None,
        term_warmup: Mapping[str, tuple | TermSchedule | None] | None = None,
        term_warmup_unit: Literal["epoch", "step"] = "epoch",
        term_loss_kwargs: Mapping[str, str] | None = None,
        **kwargs: Any,
    ):
        super().__init__(module, **kwargs)
        self._setup_term_weights(term_weights, term_warmup, term_warmup_unit, term_loss_kwargs)

    def training_step(self, batch, batch_idx):
        """Set the scheduled term weights, then run scvi's training step."""
        self._update_term_weights(batch)
        return super().training_step(batch, batch_idx)


class OTTrainingPlan(WarmupTrainingPlan):
    """:class:`WarmupTrainingPlan` with an ``"ot"`` term (``ot_weight`` passed to ``module.loss``; default 1).

    Examples
    --------
    >>> OTTrainingPlan(module, term_warmup={"ot": (0, 10)})  # doctest: +SKIP
    """

    _default_term_weights: ClassVar[dict[str, float]] = {TERM_NAMES.OT: 1.0}


class CycleTrainingPlan(WarmupTrainingPlan):
    """:class:`WarmupTrainingPlan` with a ``"cycle"`` term (``cycle_weight``; default 1).

    Examples
    --------
    >>> CycleTrainingPlan(module, cycle_weight=2.0, n_epochs_kl_warmup=None)  # doctest: +SKIP
    """

    _default_term_weights: ClassVar[dict[str, float]] = {TERM_NAMES.CYCLE: 1.0}


class TripletTrainingPlan(WarmupTrainingPlan):
    """:class:`WarmupTrainingPlan` with a ``"triplet"`` term (``triplet_weight``; default 1).

    Examples
    --------
    >>> TripletTrainingPlan(module, triplet_weight=1.0)  # doctest: +SKIP
    """

    _default_term_weights: ClassVar[dict[str, float]] = {TERM_NAMES.TRIPLET: 1.0}


class PrototypeTrainingPlan(WarmupTrainingPlan):
    """:class:`WarmupTrainingPlan` with a ``"prototype"`` term and module hooks for prototype updates.

    After every optimiser step the plan calls ``module.on_train_batch_end(plan=..., epoch=...,
    global_step=..., outputs=..., batch=..., batch_idx=...)`` under ``torch.no_grad()`` if the module
    defines it (e.g. an EMA update of prototypes from values cached during ``loss``, scbiot.md §4.5).
    Likewise ``module.on_train_start(plan=..., ...)`` (lazy initialisation from a first batch, e.g.
    ``next(iter(plan.trainer.train_dataloader))``) and ``module.on_train_epoch_end(plan=..., ...)``.
    Hooks should accept ``**kwargs``. Prototypes belong to the module so they are saved with it.

    Examples
    --------
    >>> PrototypeTrainingPlan(module, term_weights={"prototype": 1.0, "center": 1.0},
    ...                       term_warmup={"center": (0, 8)})  # doctest: +SKIP
    """

    _default_term_weights: ClassVar[dict[str, float]] = {TERM_NAMES.PROTOTYPE: 1.0}

    def on_train_start(self) -> None:
        """Forward to ``module.on_train_start`` if defined."""
        super().on_train_start()
        self._call_module_hook("on_train_start")

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """Forward to ``module.on_train_batch_end`` (after the optimiser step) if defined."""
        super().on_train_batch_end(outputs, batch, batch_idx)
        self._call_module_hook("on_train_batch_end", outputs=outputs, batch=batch, batch_idx=batch_idx)

    def on_train_epoch_end(self) -> None:
        """Forward to ``module.on_train_epoch_end`` if defined."""
        super().on_train_epoch_end()
        self._call_module_hook("on_train_epoch_end")
