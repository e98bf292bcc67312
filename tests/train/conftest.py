"""A tiny VAE module and model exercising every training plan of ``scvi_ext.train``."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from scvi.nn import Encoder, FCLayers
from torch.distributions import Normal, kl_divergence

from scvi_ext.nn import BatchDiscriminator
from scvi_ext.train import WarmupTrainingPlan, cycle_latent_distance, mine_triplets, triplet_loss

TERMS = ("ot", "cycle", "triplet", "prototype")
N_OBS, N_VARS, N_BATCH = 64, 12, 2


class ToyVAE(BaseModuleClass):
    """Encoder -> z -> batch-conditioned decoder (Gaussian on log1p counts), a discriminator, prototypes.

    ``loss`` accepts every term weight and echoes the value it received as ``<term>_weight_seen``.
    """

    def __init__(self, n_input: int, n_batch: int, n_labels: int, n_latent: int = 4, n_hidden: int = 16):
        super().__init__()
        self.n_batch = n_batch
        self.n_latent = n_latent
        self.encoder = Encoder(n_input, n_latent, n_layers=1, n_hidden=n_hidden, return_dist=True)
        self.decoder = FCLayers(n_latent, n_input, n_cat_list=[n_batch], n_layers=1, n_hidden=n_hidden)
        self.discriminator = BatchDiscriminator(n_latent, n_batch, n_hidden=8, n_layers=1)
        self.register_buffer("prototypes", torch.zeros(n_labels, n_latent))
        self.register_buffer("n_batch_end_calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("n_train_start_calls", torch.zeros((), dtype=torch.long))
        self._cache: dict[str, torch.Tensor] = {}

    def _get_inference_input(self, tensors, **kwargs):
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    @auto_move_data
    def inference(self, x, n_samples: int = 1):
        qz, z = self.encoder(torch.log1p(x))
        return {"qz": qz, "z": z}

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        return {"z": inference_outputs["z"], "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY]}

    @auto_move_data
    def generative(self, z, batch_index):
        return {"px_loc": self.decoder(z, batch_index)}

    def loss(
        self,
        tensors,
        inference_outputs,
        generative_outputs,
        kl_weight: float = 1.0,
        ot_weight: float = 0.0,
        cycle_weight: float = 0.0,
        triplet_weight: float = 0.0,
        prototype_weight: float = 0.0,
    ):
        x = torch.log1p(tensors[REGISTRY_KEYS.X_KEY])
        qz, z = inference_outputs["qz"], inference_outputs["z"]
        rec = (x - generative_outputs["px_loc"]).pow(2).sum(-1)
        kl = kl_divergence(qz, Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.loc))).sum(-1)
        batch = tensors[REGISTRY_KEYS.BATCH_KEY]
        labels = tensors[REGISTRY_KEYS.LABELS_KEY]
        ot = z.mean(0).pow(2).sum()  # stand-in for an OT cost
        cycle = cycle_latent_distance(qz.loc, qz.loc.flip(0)).mean()
        a, p, n = mine_triplets(z, batch, labels)
        triplet = triplet_loss(z[a], z[p], z[n], margin=1.0)
        proto = (z - self.prototypes[labels[:, 0].long()]).pow(2).sum(-1).mean()
        self._cache = {"z": z.detach(), "labels": labels[:, 0].long()}
        loss = (rec + kl_weight * kl).mean() + ot_weight * ot + cycle_weight * cycle
        loss = loss + triplet_weight * triplet + prototype_weight * proto
        seen = {
            f"{t}_weight_seen": torch.tensor(float(w))
            for t, w in zip(TERMS, (ot_weight, cycle_weight, triplet_weight, prototype_weight), strict=True)
        }
        return LossOutput(
            loss=loss,
            reconstruction_loss=rec,
            kl_local=kl,
            extra_metrics={
                "ot_loss": ot.detach(),
                "cycle_loss": cycle.detach(),
                "triplet_loss": triplet.detach(),
                "prototype_loss": proto.detach(),
                **seen,
            },
        )

    def on_train_start(self, plan=None, **kwargs):
        self.n_train_start_calls += 1

    def on_train_batch_end(self, plan=None, **kwargs):
        """EMA of the per-label mean latent (a prototype update)."""
        self.n_batch_end_calls += 1
        z, labels = self._cache["z"], self._cache["labels"]
        for k in labels.unique():
            self.prototypes[k] = 0.9 * self.prototypes[k] + 0.1 * z[labels == k].mean(0)

    @torch.inference_mode()
    def sample(self, *args, **kwargs):  # pragma: no cover - abstract in BaseModuleClass
        raise NotImplementedError


class ToyModel(UnsupervisedTrainingMixin, BaseModelClass):
    """Minimal scvi-tools model around :class:`ToyVAE`; set ``model._training_plan_cls`` to pick a plan."""

    _module_cls = ToyVAE
    _training_plan_cls = WarmupTrainingPlan

    def __init__(self, adata, n_latent: int = 4):
        super().__init__(adata)
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_batch=self.summary_stats.n_batch,
            n_labels=self.summary_stats.n_labels,
            n_latent=n_latent,
        )
        self._model_summary_string = "ToyModel"
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(
        cls, adata, batch_key: str | None = None, labels_key: str | None = None, layer=None, **kwargs
    ):
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)


def make_toy_adata(seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    batch = np.repeat(["b0", "b1"], N_OBS // 2)
    label = np.tile(["t0", "t1", "t2", "t3"], N_OBS // 4)
    shift = np.where(batch == "b1", 2.0, 1.0)[:, None]
    counts = rng.poisson(shift * rng.gamma(2.0, 1.0, size=(N_OBS, N_VARS))).astype(np.float32)
    obs = pd.DataFrame({"batch": batch, "label": label}, index=[f"c{i}" for i in range(N_OBS)])
    return ad.AnnData(counts, obs=obs)


@pytest.fixture
def toy_adata() -> ad.AnnData:
    adata = make_toy_adata()
    ToyModel.setup_anndata(adata, batch_key="batch", labels_key="label")
    return adata


@pytest.fixture
def fit():
    """Train a ToyModel (fresh unless ``model=`` is given) with the given plan class; returns the model.

    The plan instance used is ``model.trainer.lightning_module``.
    """

    def _fit(plan_cls, adata, max_epochs=3, validation=False, plan_kwargs=None, model=None, **kwargs):
        model = ToyModel(adata) if model is None else model
        model._training_plan_cls = plan_cls
        model.train(
            max_epochs=max_epochs,
            batch_size=16,
            train_size=0.75 if validation else 1.0,
            check_val_every_n_epoch=1 if validation else None,
            plan_kwargs=plan_kwargs or {},
            accelerator="cpu",
            enable_progress_bar=False,
            log_every_n_steps=1,
            **kwargs,
        )
        return model

    return _fit


@pytest.fixture
def toy_module() -> ToyVAE:
    """A fresh ToyVAE matching :func:`make_toy_adata` (12 genes, 2 batches, 4 labels)."""
    return ToyVAE(N_VARS, N_BATCH, n_labels=4)


@pytest.fixture
def toy_model_cls() -> type[ToyModel]:
    return ToyModel
