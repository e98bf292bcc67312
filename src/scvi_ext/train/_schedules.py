"""Linear warm-up schedules for named loss-term weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ._constants import SCHEDULE_UNITS


@dataclass(frozen=True)
class TermSchedule:
    """Weight of one loss term as a function of the epoch or step.

    ``min_weight`` before ``start``; from ``start`` a linear ramp reaching ``weight`` after ``n_warmup``
    units (``min_weight + (weight - min_weight) * (t - start) / n_warmup``); ``weight`` afterwards.
    ``n_warmup = 0`` is a hard gate at ``start`` (scCRAFT's adversarial warm-up, sccraft.md §4 L5);
    ``start = 0, n_warmup = 8`` gives ``min(1, epoch / 8) * weight`` (scBIOT's ramps, scbiot.md §4.4).

    Parameters
    ----------
    weight
        Final weight.
    start
        First epoch/step of the ramp (the weight is ``min_weight`` before it).
    n_warmup
        Length of the linear ramp (``0``: jump to ``weight`` at ``start``).
    unit
        ``"epoch"`` (Lightning's ``current_epoch``) or ``"step"`` (training steps taken).
    min_weight
        Weight before and at the start of the ramp.

    Examples
    --------
    >>> s = TermSchedule(weight=2.0, start=1, n_warmup=2)
    >>> [s.value(epoch=e, step=0) for e in range(5)]
    [0.0, 0.0, 1.0, 2.0, 2.0]
    """

    weight: float
    start: int = 0
    n_warmup: int = 0
    unit: Literal["epoch", "step"] = "epoch"
    min_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.unit not in SCHEDULE_UNITS:
            raise ValueError(f"unit must be one of {tuple(SCHEDULE_UNITS)}, got {self.unit!r}.")
        if self.start < 0 or self.n_warmup < 0:
            raise ValueError(
                f"start and n_warmup must be >= 0, got start={self.start}, n_warmup={self.n_warmup}."
            )

    def value(self, epoch: int, step: int) -> float:
        """Weight at ``epoch`` / ``step`` (only the one matching ``unit`` is used).

        Parameters
        ----------
        epoch
            Current epoch (0-based).
        step
            Training steps taken so far (0-based).

        Returns
        -------
        float
            The scheduled weight.
        """
        t = epoch if self.unit == SCHEDULE_UNITS.EPOCH else step
        if t < self.start:
            return float(self.min_weight)
        if self.n_warmup > 0 and t < self.start + self.n_warmup:
            frac = (t - self.start) / self.n_warmup
            return float(self.min_weight + (self.weight - self.min_weight) * frac)
        return float(self.weight)


def build_term_schedules(
    term_weights: Mapping[str, float],
    term_warmup: Mapping[str, tuple | TermSchedule | None] | None = None,
    unit: Literal["epoch", "step"] = "epoch",
) -> dict[str, TermSchedule]:
    """Combine final weights and warm-up specs into one :class:`TermSchedule` per term.

    Parameters
    ----------
    term_weights
        ``{name: final weight}``.
    term_warmup
        ``{name: spec}`` with spec ``None`` (constant weight), ``(start, n_warmup)``,
        ``(start, n_warmup, unit)`` or a :class:`TermSchedule` (its ``weight`` is replaced by
        ``term_weights[name]``). Names must appear in ``term_weights``.
    unit
        Unit of the 2-tuples.

    Returns
    -------
    dict
        ``{name: TermSchedule}``.

    Examples
    --------
    >>> build_term_schedules({"ot": 1.0}, {"ot": (0, 4)})["ot"].value(epoch=1, step=0)
    0.25
    """
    term_warmup = dict(term_warmup or {})
    unknown = set(term_warmup) - set(term_weights)
    if unknown:
        raise KeyError(
            f"term_warmup names {sorted(unknown)} that have no weight in term_weights (known: {sorted(term_weights)})."
        )
    if unit not in SCHEDULE_UNITS:
        raise ValueError(f"term_warmup_unit must be one of {tuple(SCHEDULE_UNITS)}, got {unit!r}.")
    schedules: dict[str, TermSchedule] = {}
    for name, weight in term_weights.items():
        try:
            weight = float(weight)
        except (TypeError, ValueError) as err:
            raise ValueError(f"term_weights[{name!r}] must be a number, got {weight!r}.") from err
        spec = term_warmup.get(name)
        if spec is None:
            schedules[name] = TermSchedule(weight=weight, unit=unit)
        elif isinstance(spec, TermSchedule):
            schedules[name] = TermSchedule(weight, spec.start, spec.n_warmup, spec.unit, spec.min_weight)
        elif isinstance(spec, tuple | list) and len(spec) in (2, 3):
            schedules[name] = TermSchedule(
                weight, int(spec[0]), int(spec[1]), spec[2] if len(spec) == 3 else unit
            )
        else:
            raise ValueError(
                f"term_warmup[{name!r}] must be None, (start, n_warmup), (start, n_warmup, unit) or a "
                f"TermSchedule; got {spec!r}."
            )
    return schedules
