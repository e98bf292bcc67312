"""AdversarialTrainingPlan: alternating updates touch only their own parameters; history; save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scvi_ext.train import AdversarialTrainingPlan


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


class _SpyPlan(AdversarialTrainingPlan):
    """Records encoder/discriminator state around each discriminator and generator update."""

    def __init__(self, module, **kwargs):
        super().__init__(module, **kwargs)
        self.records: list[
            tuple[str, bool, bool]
        ] = []  # (step kind, encoder unchanged, discriminator unchanged)

    def _record(self, kind, fn, *args):
        enc, disc = _snapshot(self.module.encoder), _snapshot(self.module.discriminator)
        out = fn(*args)
        self.records.append(
            (
                kind,
                _same(enc, _snapshot(self.module.encoder)),
                _same(disc, _snapshot(self.module.discriminator)),
            )
        )
        return out

    def discriminator_step(self, z_detached, target, optimizer):
        return self._record("disc", super().discriminator_step, z_detached, target, optimizer)

    def generator_step(self, loss, optimizer):
        return self._record("gen", super().generator_step, loss, optimizer)


def test_alternating_updates_touch_only_their_parameters(toy_adata, fit):
    model = fit(_SpyPlan, toy_adata, max_epochs=2, plan_kwargs={"n_discriminator_steps": 3})
    records = model.trainer.lightning_module.records
    n_steps = 2 * 4
    kinds = [r[0] for r in records]
    assert kinds == (["disc"] * 3 + ["gen"]) * n_steps
    for kind, enc_unchanged, disc_unchanged in records:
        if kind == "disc":
            assert enc_unchanged and not disc_unchanged  # discriminator moves, encoder does not
        else:
            assert disc_unchanged and not enc_unchanged  # generator moves the encoder only


def test_history_keys_warmup_gate_and_validation(toy_adata, fit):
    model = fit(
        AdversarialTrainingPlan,
        toy_adata,
        max_epochs=3,
        validation=True,
        plan_kwargs={
            "adversarial_weight": 0.2,
            "n_epochs_adversarial_warmup": 1,
            "n_epochs_adversarial_ramp": 2,
            "term_weights": {"triplet": 1.0},
            "term_warmup": {"triplet": (0, 2)},
        },
    )
    h = model.history
    for key in (
        "train_loss",
        "elbo_train",
        "elbo_validation",
        "validation_loss",
        "discriminator_loss_train",
        "discriminator_loss_validation",
        "adversarial_loss_train",
        "adversarial_loss_validation",
        "discriminator_accuracy_train",
        "triplet_loss_train",
    ):
        assert key in h, f"{key} missing from {sorted(h)}"
        assert np.isfinite(h[key].to_numpy(dtype=float)).all()
    np.testing.assert_allclose(h["adversarial_weight"].to_numpy(dtype=float).ravel(), [0.0, 0.0, 0.1])
    np.testing.assert_allclose(h["triplet_weight"].to_numpy(dtype=float).ravel(), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(h["triplet_weight_seen_train"].to_numpy(dtype=float).ravel(), [0.0, 0.5, 1.0])
    # neg_ce: the adversarial term is minus the discriminator's cross-entropy
    assert (h["adversarial_loss_train"].to_numpy(dtype=float) < 0).all()


def test_generator_gradient_reaches_encoder_only_after_warmup(toy_module):
    """Adversarial grad on the encoder is zero while the weight is 0 and non-zero afterwards (sccraft §14.5)."""
    plan = AdversarialTrainingPlan(toy_module, adversarial_weight=0.5, n_epochs_adversarial_warmup=2)
    x = torch.rand(8, 12) * 5
    batch = torch.tensor([0, 1] * 4)
    for epoch, expect_grad in ((0, False), (2, True)):
        weight = plan.adversarial_schedule.value(epoch, 0)
        toy_module.zero_grad()
        z = toy_module.inference(x)["z"]
        term = weight * toy_module.discriminator.adversarial_loss(z, batch)
        if term.requires_grad:
            term.backward()
        grads = [p.grad for p in toy_module.encoder.parameters()]
        has_grad = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert has_grad == expect_grad


@pytest.mark.parametrize("mode", ["uniform", "flipped"])
def test_other_adversarial_objectives_train(mode, toy_adata, fit):
    model = fit(AdversarialTrainingPlan, toy_adata, max_epochs=1, plan_kwargs={"adversarial_loss": mode})
    assert (model.history["adversarial_loss_train"].to_numpy(dtype=float) > 0).all()


def test_discriminator_survives_save_load(toy_adata, fit, toy_model_cls, tmp_path):
    model = toy_model_cls(toy_adata)
    before = _snapshot(model.module.discriminator)
    fit(
        AdversarialTrainingPlan,
        toy_adata,
        max_epochs=2,
        plan_kwargs={"n_discriminator_steps": 2},
        model=model,
    )
    trained = _snapshot(model.module.discriminator)
    assert not _same(before, trained)  # the discriminator was trained
    model.save(tmp_path / "toy", overwrite=True)
    loaded = toy_model_cls.load(tmp_path / "toy", adata=toy_adata)
    assert _same(trained, _snapshot(loaded.module.discriminator))


@pytest.mark.parametrize("metric", ["elbo_validation", "elbo_train"])
def test_lr_scheduler_and_step_kl_warmup(metric, toy_adata, fit):
    model = fit(
        AdversarialTrainingPlan,
        toy_adata,
        max_epochs=2,
        validation=True,
        plan_kwargs={
            "reduce_lr_on_plateau": True,
            "lr_scheduler_metric": metric,
            "lr_patience": 0,
            "lr_threshold": 1e6,  # never "improves": the LR is cut at every scheduler step
            "lr_factor": 0.5,
            "n_steps_kl_warmup": 6,
            "n_epochs_kl_warmup": None,
            "n_discriminator_steps": 4,
        },
    )
    assert np.isfinite(model.history["elbo_validation"].to_numpy(dtype=float)).all()
    plan = model.trainer.lightning_module
    assert plan.lr_schedulers().last_epoch == 2  # stepped by hand once per epoch (manual optimisation)
    opt_g, opt_d = plan.optimizers()
    assert opt_g.param_groups[0]["lr"] < plan.lr  # generator LR reduced
    assert opt_d.param_groups[0]["lr"] == plan.lr  # discriminator LR untouched
    steps = 2 * 3  # 48 training cells / batch 16
    assert plan._schedule_step() == steps  # generator steps, not Lightning's optimizer-step count
    assert model.trainer.global_step == steps * (1 + 4)
    assert float(plan.kl_weight) == 1.0


def test_bad_configuration_errors(toy_module):
    with pytest.raises(ValueError, match="adversarial_loss"):
        AdversarialTrainingPlan(toy_module, adversarial_loss="wasserstein")
    with pytest.raises(ValueError, match="n_discriminator_steps"):
        AdversarialTrainingPlan(toy_module, n_discriminator_steps=-1)
    with pytest.raises(ValueError, match="critic"):
        AdversarialTrainingPlan(toy_module, discriminator_attr="critic")
