"""WarmupTrainingPlan and its thin variants: scheduled weights reach module.loss and model.history."""

from __future__ import annotations

import numpy as np
import pytest

from scvi_ext.train import (
    CycleTrainingPlan,
    OTTrainingPlan,
    PrototypeTrainingPlan,
    TermSchedule,
    TripletTrainingPlan,
    WarmupTrainingPlan,
    build_term_schedules,
)

TERMS = ("ot", "cycle", "triplet", "prototype")
THIN_PLANS = {
    "ot": OTTrainingPlan,
    "cycle": CycleTrainingPlan,
    "triplet": TripletTrainingPlan,
    "prototype": PrototypeTrainingPlan,
}


def _history(model, key):
    assert key in model.history, f"{key} missing from history keys {sorted(model.history)}"
    return model.history[key].to_numpy(dtype=float).ravel()


def test_term_schedule_shapes():
    ramp = TermSchedule(weight=2.0, start=1, n_warmup=2)
    assert [ramp.value(e, 0) for e in range(5)] == [0.0, 0.0, 1.0, 2.0, 2.0]
    gate = TermSchedule(weight=0.2, start=3)
    assert [gate.value(e, 0) for e in range(5)] == [0.0, 0.0, 0.0, 0.2, 0.2]
    steps = TermSchedule(weight=1.0, start=0, n_warmup=4, unit="step", min_weight=0.2)
    assert steps.value(epoch=99, step=2) == pytest.approx(0.6)
    assert steps.value(epoch=0, step=10) == 1.0
    scbiot_ramp = TermSchedule(weight=1.5, start=0, n_warmup=5)  # r_s = min(1, epoch / 5)
    assert [scbiot_ramp.value(e, 0) for e in (0, 1, 5, 9)] == pytest.approx([0.0, 0.3, 1.5, 1.5])


def test_build_term_schedules_specs_and_errors():
    s = build_term_schedules({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": (1, 2), "b": (0, 4, "step"), "c": None})
    assert s["a"] == TermSchedule(1.0, 1, 2, "epoch")
    assert s["b"].unit == "step" and s["c"].n_warmup == 0
    with pytest.raises(KeyError, match="term_warmup"):
        build_term_schedules({"a": 1.0}, {"typo": (0, 1)})
    with pytest.raises(ValueError, match="term_warmup\\['a'\\]"):
        build_term_schedules({"a": 1.0}, {"a": (0, 1, "epoch", 4)})
    with pytest.raises(ValueError, match="unit"):
        TermSchedule(1.0, unit="minute")
    with pytest.raises(ValueError, match="term_weights"):
        build_term_schedules({"a": "high"})


@pytest.mark.parametrize("term", TERMS)
def test_thin_plan_follows_schedule_into_loss_and_history(term, toy_adata, fit):
    plan_cls = THIN_PLANS[term]
    model = fit(
        plan_cls,
        toy_adata,
        max_epochs=3,
        plan_kwargs={"term_weights": {term: 0.8}, "term_warmup": {term: (1, 2)}},
    )
    expected = [TermSchedule(0.8, 1, 2).value(e, 0) for e in range(3)]  # [0, 0, 0.4]
    np.testing.assert_allclose(_history(model, f"{term}_weight"), expected)
    # the module really received these values (it echoes them as extra metrics)
    np.testing.assert_allclose(_history(model, f"{term}_weight_seen_train"), expected, rtol=1e-6)
    assert np.isfinite(_history(model, f"{term}_loss_train")).all()
    assert np.isfinite(_history(model, "elbo_train")).all()


def test_step_schedule_and_several_terms(toy_adata, fit):
    # 64 cells / batch 16 = 4 steps per epoch; ramp over 8 steps -> epoch means (0+..+3)/8/4, (4+..+7)/8/4, 1
    model = fit(
        WarmupTrainingPlan,
        toy_adata,
        max_epochs=3,
        plan_kwargs={
            "term_weights": {"ot": 1.0, "triplet": 0.5},
            "term_warmup": {"ot": (0, 8)},
            "term_warmup_unit": "step",
        },
    )
    np.testing.assert_allclose(_history(model, "ot_weight"), [6 / 32, 22 / 32, 1.0], rtol=1e-6)
    np.testing.assert_allclose(_history(model, "triplet_weight"), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(_history(model, "triplet_weight_seen_train"), [0.5, 0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(_history(model, "cycle_weight_seen_train"), [0.0, 0.0, 0.0])  # not a term


def test_validation_uses_training_weights(toy_adata, fit):
    model = fit(OTTrainingPlan, toy_adata, max_epochs=2, validation=True, plan_kwargs={"ot_weight": 0.3})
    np.testing.assert_allclose(_history(model, "ot_weight"), [0.3, 0.3])
    np.testing.assert_allclose(_history(model, "ot_weight_seen_validation"), [0.3, 0.3], rtol=1e-6)
    assert "elbo_validation" in model.history


def test_plain_weight_kwarg_is_the_term_weight(toy_module):
    module = toy_module
    plan = CycleTrainingPlan(module, cycle_weight=2.5)
    assert plan.term_schedules["cycle"].weight == 2.5
    assert plan.loss_kwargs["cycle_weight"] == 2.5
    with pytest.raises(ValueError, match="given twice"):
        CycleTrainingPlan(module, cycle_weight=2.5, term_weights={"cycle": 1.0})


def test_term_loss_kwargs_renames_and_missing_argument_errors(toy_module):
    module = toy_module
    plan = WarmupTrainingPlan(module, term_weights={"z": 2.0}, term_loss_kwargs={"z": "cycle_weight"})
    assert plan.loss_kwargs["cycle_weight"] == 2.0 and "z_weight" not in plan.loss_kwargs
    with pytest.raises(ValueError, match="does not accept \\['center_weight'\\]"):
        WarmupTrainingPlan(module, term_weights={"center": 1.0})
    with pytest.raises(KeyError, match="term_loss_kwargs"):
        WarmupTrainingPlan(module, term_loss_kwargs={"nope": "ot_weight"})


def test_prototype_plan_calls_module_hooks_after_each_step(toy_adata, fit):
    model = fit(PrototypeTrainingPlan, toy_adata, max_epochs=2)
    n_steps = 2 * 4
    assert int(model.module.n_batch_end_calls) == n_steps
    assert int(model.module.n_train_start_calls) == 1
    assert float(model.module.prototypes.abs().sum()) > 0  # EMA moved them off zero
    # non-prototype plans do not call the hook
    model = fit(OTTrainingPlan, toy_adata, max_epochs=1)
    assert int(model.module.n_batch_end_calls) == 0
