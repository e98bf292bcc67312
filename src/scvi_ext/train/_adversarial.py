"""Two-optimiser adversarial training plan with a discriminator stored in the module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass
from torch.optim.lr_scheduler import ReduceLROnPlateau

from scvi_ext.nn._discriminator import ADVERSARIAL_LOSSES

from .._compat import compute_kl_weight as _compute_kl_weight
from ._constants import PLAN_METRICS
from ._plans import WarmupTrainingPlan, _batch_size
from ._schedules import TermSchedule


class AdversarialTrainingPlan(WarmupTrainingPlan):
    """Manual-optimisation plan: discriminator steps on the detached latent, then a generator step.

    Per training step (sccraft.md §8):

    1. forward pass of the module (``loss_kwargs`` carry ``kl_weight`` and the scheduled term weights);
    2. ``n_discriminator_steps`` updates of ``module.<discriminator_attr>`` on the **detached** latent
       ``inference_outputs[latent_key]`` (cross-entropy on ``batch[target_key]``), with their own Adam
       over the discriminator's parameters only — the encoder is untouched;
    3. one generator update of every other trainable module parameter on
       ``module loss + adversarial_weight * adversarial term``, the term evaluated with the *updated*
       discriminator (``adversarial_loss``: ``"neg_ce"`` = maximise the discriminator's CE,
       ``"uniform"`` = push its prediction to uniform, ``"flipped"`` = scvi-tools' fool loss). The
       discriminator's parameters are excluded (``toggle_optimizer``), so it is unchanged by this step.

    The adversarial weight is 0 for the first ``n_epochs_adversarial_warmup`` epochs (the discriminator
    still trains), then ramps linearly over ``n_epochs_adversarial_ramp`` epochs (``0``: a hard gate) to
    ``adversarial_weight``. The discriminator lives in the module, so ``model.save()`` keeps it.
    ``module.loss`` must not use the discriminator itself (its parameters change in place between the
    forward pass and the generator's backward pass).

    Logged (epoch means, in ``model.history``): ``train_loss`` (generator objective), scvi's ELBO
    metrics and extra metrics, ``discriminator_loss_train``, ``adversarial_loss_train`` (unweighted
    term), ``discriminator_accuracy_train``, ``adversarial_weight``, each term's ``<name>_weight``, and
    the ``_validation`` variants when validation runs.

    Parameters
    ----------
    module
        Module with a discriminator attribute offering ``loss(z, target)`` and
        ``adversarial_loss(z, target, mode)`` (:class:`scvi_ext.nn.BatchDiscriminator`).
    adversarial_weight
        Final weight of the adversarial term (scCRAFT's ``d_coef`` = 0.2).
    n_epochs_adversarial_warmup
        Epochs with weight 0 (scCRAFT: 50).
    n_epochs_adversarial_ramp
        Epochs of linear ramp after the warm-up (0: jump).
    adversarial_loss
        ``"neg_ce"``, ``"uniform"`` or ``"flipped"`` (see :meth:`BatchDiscriminator.adversarial_loss`).
    n_discriminator_steps
        Discriminator updates per training step (scCRAFT: 10); ``0`` freezes it.
    latent_key
        Key of the latent in the module's inference outputs.
    discriminator_attr
        Attribute name of the discriminator on the module.
    target_key
        Registry key of the labels the discriminator predicts (default: the batch).
    discriminator_lr, discriminator_eps, discriminator_weight_decay
        Adam settings of the discriminator optimiser (default: the generator's ``lr``/``eps``/``weight_decay``).
    **kwargs
        :class:`WarmupTrainingPlan` arguments (``term_weights``, ``term_warmup``, scvi's optimiser and KL
        warm-up options, constant loss kwargs).

    Examples
    --------
    >>> plan_kwargs = {"adversarial_weight": 0.2, "n_epochs_adversarial_warmup": 50,
    ...                "n_discriminator_steps": 10, "eps": 1e-8, "weight_decay": 0.0}
    >>> model.train(max_epochs=150, plan_kwargs=plan_kwargs)  # doctest: +SKIP
    """

    def __init__(
        self,
        module: BaseModuleClass,
        *,
        adversarial_weight: float = 1.0,
        n_epochs_adversarial_warmup: int = 0,
        n_epochs_adversarial_ramp: int = 0,
        adversarial_loss: Literal["neg_ce", "uniform", "flipped"] = "neg_ce",
        n_discriminator_steps: int = 1,
        latent_key: str = "z",
        discriminator_attr: str = "discriminator",
        target_key: str = REGISTRY_KEYS.BATCH_KEY,
        discriminator_lr: float | None = None,
        discriminator_eps: float | None = None,
        discriminator_weight_decay: float | None = None,
        **kwargs: Any,
    ):
        discriminator = getattr(module, discriminator_attr, None)
        if not isinstance(discriminator, torch.nn.Module) or not all(
            callable(getattr(discriminator, m, None)) for m in ("loss", "adversarial_loss")
        ):
            raise ValueError(
                f"{type(module).__name__}.{discriminator_attr} must be a discriminator module with "
                "`loss(z, target)` and `adversarial_loss(z, target, mode)` (e.g. scvi_ext.nn.BatchDiscriminator); "
                f"got {type(discriminator).__name__}."
            )
        if adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(
                f"adversarial_loss must be one of {tuple(ADVERSARIAL_LOSSES)}, got {adversarial_loss!r}."
            )
        if int(n_discriminator_steps) < 0:
            raise ValueError(f"n_discriminator_steps must be >= 0, got {n_discriminator_steps}.")
        super().__init__(module, **kwargs)
        self.automatic_optimization = False
        self.discriminator_attr = discriminator_attr
        self.adversarial_loss = adversarial_loss
        self.n_discriminator_steps = int(n_discriminator_steps)
        self.latent_key = latent_key
        self.target_key = target_key
        self.discriminator_lr = discriminator_lr
        self.discriminator_eps = discriminator_eps
        self.discriminator_weight_decay = discriminator_weight_decay
        self.adversarial_schedule = TermSchedule(
            weight=float(adversarial_weight),
            start=int(n_epochs_adversarial_warmup),
            n_warmup=int(n_epochs_adversarial_ramp),
            unit="epoch",
        )
        self._n_generator_steps = 0

    # ------------------------------------------------------------------ helpers
    @property
    def discriminator(self) -> torch.nn.Module:
        """The module's discriminator."""
        return getattr(self.module, self.discriminator_attr)

    @property
    def adversarial_weight(self) -> float:
        """Current weight of the adversarial term (0 during the warm-up)."""
        return self.adversarial_schedule.value(self.current_epoch, self._schedule_step())

    def _schedule_step(self) -> int:
        # Lightning's global_step counts every optimizer.step() (discriminator steps too) in manual mode;
        # read through __dict__: scvi's __init__ evaluates kl_weight before this plan sets the counter
        return self.__dict__.get("_n_generator_steps", 0)

    @property
    def kl_weight(self):
        """scvi's KL warm-up, counting generator steps for ``n_steps_kl_warmup``."""
        klw = _compute_kl_weight(
            self.current_epoch,
            self._schedule_step(),
            self.n_epochs_kl_warmup,
            self.n_steps_kl_warmup,
            self.max_kl_weight,
            self.min_kl_weight,
        )
        return torch.tensor(klw).to(self.device)

    def _latent_and_target(
        self, batch: Mapping[str, torch.Tensor], inference_outputs: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.latent_key not in inference_outputs:
            raise KeyError(
                f"latent_key={self.latent_key!r} is not an inference output (available: {sorted(inference_outputs)})."
            )
        if self.target_key not in batch:
            raise KeyError(f"target_key={self.target_key!r} is not in the minibatch (keys: {sorted(batch)}).")
        return inference_outputs[self.latent_key], batch[self.target_key]

    def _split_parameters(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        disc_ids = {id(p) for p in self.discriminator.parameters()}
        gen = [p for p in self.module.parameters() if p.requires_grad and id(p) not in disc_ids]
        disc = [p for p in self.discriminator.parameters() if p.requires_grad]
        return gen, disc

    def discriminator_step(self, z_detached: torch.Tensor, target: torch.Tensor, optimizer) -> torch.Tensor:
        """One discriminator update on a detached latent.

        Parameters
        ----------
        z_detached
            Latent without gradient history.
        target
            Labels (batch codes).
        optimizer
            The discriminator's optimiser.

        Returns
        -------
        torch.Tensor
            The discriminator loss before the update (detached).
        """
        optimizer.zero_grad()
        loss = self.discriminator.loss(z_detached, target)
        self.manual_backward(loss)
        optimizer.step()
        return loss.detach()

    def generator_step(self, loss: torch.Tensor, optimizer) -> None:
        """One update of the non-discriminator parameters on ``loss``.

        Parameters
        ----------
        loss
            Generator objective.
        optimizer
            The generator's optimiser.
        """
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch, batch_idx):
        """Discriminator step(s) on the detached latent, then the generator step."""
        n_obs = _batch_size(batch)
        if "kl_weight" in self.loss_kwargs:
            kl_weight = self.kl_weight
            self.loss_kwargs["kl_weight"] = kl_weight
            self.log("kl_weight", kl_weight, on_step=True, on_epoch=False, batch_size=n_obs)
        self._update_term_weights(batch)
        opts = self.optimizers()
        opt_g, opt_d = (
            (opts[0], opts[1] if len(opts) > 1 else None) if isinstance(opts, list) else (opts, None)
        )

        inference_outputs, _, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
        z, target = self._latent_and_target(batch, inference_outputs)

        # (1) discriminator on the detached latent: the encoder receives no gradient
        d_losses = []
        if opt_d is not None:
            z_detached = z.detach()
            for _ in range(self.n_discriminator_steps):
                d_losses.append(self.discriminator_step(z_detached, target, opt_d))

        # (2) generator: discriminator parameters excluded from the graph
        weight = self.adversarial_weight
        self.toggle_optimizer(opt_g)
        try:
            if weight > 0:
                adv = self.discriminator.adversarial_loss(z, target, mode=self.adversarial_loss)
                total = loss_output.loss + weight * adv
            else:
                with torch.no_grad():
                    adv = self.discriminator.adversarial_loss(z.detach(), target, mode=self.adversarial_loss)
                total = loss_output.loss
            self.generator_step(total, opt_g)
        finally:
            self.untoggle_optimizer(opt_g)
        self._n_generator_steps += 1

        with torch.no_grad():
            if d_losses:
                d_loss = torch.stack(d_losses).mean()
            else:
                d_loss = self.discriminator.loss(z.detach(), target)
            accuracy = (
                self.discriminator.accuracy(z.detach(), target)
                if hasattr(self.discriminator, "accuracy")
                else None
            )
        self.log(
            "train_loss",
            total.detach(),
            on_step=self.on_step,
            on_epoch=self.on_epoch,
            prog_bar=True,
            batch_size=n_obs,
            sync_dist=self.use_sync_dist,
        )
        self.log(PLAN_METRICS.ADVERSARIAL_WEIGHT, weight, on_step=False, on_epoch=True, batch_size=n_obs)
        self._log_discriminator_metrics(d_loss, adv.detach(), accuracy, "train", n_obs)
        self.compute_and_log_metrics(loss_output, self.train_metrics, "train")
        if loss_output.extra_metrics is not None and len(loss_output.extra_metrics) > 0:
            self.prepare_scib_autotune(loss_output.extra_metrics, "training")
        return total.detach()

    def _log_discriminator_metrics(self, d_loss, adv, accuracy, mode: str, n_obs: int) -> None:
        kw = {"on_step": False, "on_epoch": True, "batch_size": n_obs, "sync_dist": self.use_sync_dist}
        self.log(f"{PLAN_METRICS.DISCRIMINATOR_LOSS}_{mode}", d_loss, **kw)
        self.log(f"{PLAN_METRICS.ADVERSARIAL_LOSS}_{mode}", adv, **kw)
        if accuracy is not None:
            self.log(f"{PLAN_METRICS.DISCRIMINATOR_ACCURACY}_{mode}", accuracy, **kw)

    def validation_step(self, batch, batch_idx):
        """scvi's validation metrics plus the discriminator's loss/accuracy on validation cells."""
        n_obs = _batch_size(batch)
        inference_outputs, _, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
        self.log(
            "validation_loss",
            loss_output.loss,
            on_step=self.on_step,
            on_epoch=self.on_epoch,
            batch_size=n_obs,
            sync_dist=self.use_sync_dist,
        )
        self.compute_and_log_metrics(loss_output, self.val_metrics, "validation")
        z, target = self._latent_and_target(batch, inference_outputs)
        with torch.no_grad():
            d_loss = self.discriminator.loss(z, target)
            adv = self.discriminator.adversarial_loss(z, target, mode=self.adversarial_loss)
            accuracy = (
                self.discriminator.accuracy(z, target) if hasattr(self.discriminator, "accuracy") else None
            )
        self._log_discriminator_metrics(d_loss, adv, accuracy, "validation", n_obs)
        if loss_output.extra_metrics is not None and len(loss_output.extra_metrics) > 0:
            self.prepare_scib_autotune(loss_output.extra_metrics, "validation")

    def _step_scheduler(self, on_validation: bool) -> None:
        if not self.reduce_lr_on_plateau or ("validation" in self.lr_scheduler_metric) != on_validation:
            return
        metric = self.trainer.callback_metrics.get(self.lr_scheduler_metric)
        if metric is None:  # e.g. the sanity check, or validation not run this epoch
            return
        sch = self.lr_schedulers()
        (sch[0] if isinstance(sch, list) else sch).step(metric)

    def on_train_epoch_end(self) -> None:
        """Step the LR scheduler on a training metric (manual optimisation steps none by itself)."""
        super().on_train_epoch_end()
        self._step_scheduler(on_validation=False)

    def on_validation_epoch_end(self) -> None:
        """Step the LR scheduler on a validation metric."""
        super().on_validation_epoch_end()
        self._step_scheduler(on_validation=True)

    def configure_optimizers(self):
        """Generator optimiser (scvi's options) over non-discriminator parameters; Adam for the discriminator."""
        gen_params, disc_params = self._split_parameters()
        if not gen_params:
            raise ValueError("The module has no trainable parameters outside its discriminator.")
        opt_g = self.get_optimizer_creator()(gen_params)
        optimizers = [opt_g]
        if disc_params and self.n_discriminator_steps > 0:
            optimizers.append(
                torch.optim.Adam(
                    disc_params,
                    lr=self.lr if self.discriminator_lr is None else self.discriminator_lr,
                    eps=self.eps if self.discriminator_eps is None else self.discriminator_eps,
                    weight_decay=(
                        self.weight_decay
                        if self.discriminator_weight_decay is None
                        else self.discriminator_weight_decay
                    ),
                )
            )
        if self.reduce_lr_on_plateau:
            scheduler = ReduceLROnPlateau(
                opt_g,
                patience=self.lr_patience,
                factor=self.lr_factor,
                threshold=self.lr_threshold,
                min_lr=self.lr_min,
                threshold_mode="abs",
            )
            # stepped by hand on `lr_scheduler_metric` in on_*_epoch_end (manual optimisation)
            return optimizers, [scheduler]
        return optimizers
