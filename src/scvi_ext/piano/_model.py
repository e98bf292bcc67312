"""The PIANO model class (scvi-tools ``BaseModelClass``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
)
from scvi.model.base import ArchesMixin, BaseModelClass, RNASeqMixin, UnsupervisedTrainingMixin, VAEMixin
from scvi.model.base._archesmixin import _get_loaded_data
from scvi.utils import setup_anndata_dsp

from .._validation import check_counts, check_finite, check_obs_key, check_query_features, get_matrix
from ._constants import PIANO_DEFAULTS as D
from ._constants import PIANO_KEYS
from ._fast import fast_train, kl_weight_at, make_resident_data
from ._module import PIANOModule
from ._trainingplan import PIANOTrainingPlan

logger = logging.getLogger(__name__)

_CAT_REGISTRY_KEYS = (REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.CAT_COVS_KEY)


def default_max_epochs(n_cells: int, batch_size: int = D.BATCH_SIZE) -> int:
    """PIANO's default epoch count: the paper's 200, or enough epochs for 1,000 optimiser steps on small data.

    The published default (piano.md §1.6) assumes atlas-sized data; at 200 cells and batch 128 an epoch is one
    step, so 200 epochs are 200 updates and the embedding is undertrained (scmerge_mesc: Bio 0.346 at 200
    epochs vs 0.506 at 1,000, benchmarks/results/piano/quality.md). Data with >= 5 full batches (640 cells at
    batch 128) keep 200.

    Parameters
    ----------
    n_cells
        Training cells.
    batch_size
        Cells per step (the last partial batch is dropped).

    Returns
    -------
    int
        ``max(200, ceil(1000 / steps_per_epoch))``.

    Examples
    --------
    >>> default_max_epochs(200), default_max_epochs(700), default_max_epochs(100_000)
    (1000, 200, 200)
    """
    steps = max(int(n_cells) // max(min(int(batch_size), int(n_cells)), 1), 1)
    return max(D.MAX_EPOCHS, math.ceil(D.MIN_TRAIN_STEPS / steps))


class PIANO(ArchesMixin, VAEMixin, RNASeqMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """PIANO: a VAE with a negative-binomial GLM output layer over all covariates, with a fast training loop.

    Wang et al. (2025), *Fast Optimization of Robust Transcriptomics Embeddings using Probabilistic Inference
    Autoencoder Networks for multi-Omics*, bioRxiv 2025.11.16.686778. Spec: ``piano.md``.

    The encoder sees only ``log1p`` counts (so a query is embedded without training); every covariate (batch,
    other categorical keys, continuous keys) enters the first decoder layer and a per-gene NB GLM for the
    mean (with the decoder's log proportion and the log library size) and for the log-odds. ``train(fast=True)``
    (default) runs a loop with the data resident on the device and no per-step host synchronisation;
    ``fast=False`` uses scvi's Lightning runner with :class:`PIANOTrainingPlan`.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_hidden, n_layers, n_latent, dropout_rate
        Architecture (paper: 256, 3, 32, 0.1).
    distribution
        ``"nb"`` (published) or ``"zinb"``.
    parameterization
        ``"ksi-psi"`` (NB-GLM, published) or ``"mu-theta"``.
    adversarial
        Gradient-reversal covariate classifier on ``z`` (a later addition of the reference code; off = as
        published).
    **module_kwargs
        Passed to :class:`~scvi_ext.piano.PIANOModule`.

    Examples
    --------
    >>> import scvi_ext
    >>> scvi_ext.piano.PIANO.setup_anndata(adata, layer="counts", batch_key="lane")  # doctest: +SKIP
    >>> model = scvi_ext.piano.PIANO(adata)  # doctest: +SKIP
    >>> model.train(max_epochs=20)  # doctest: +SKIP
    >>> adata.obsm["X_piano"] = model.get_latent_representation()  # doctest: +SKIP
    """

    _module_cls = PIANOModule
    _training_plan_cls = PIANOTrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        n_hidden: int = D.N_HIDDEN,
        n_layers: int = D.N_LAYERS,
        n_latent: int = D.N_LATENT,
        dropout_rate: float = D.DROPOUT,
        distribution: Literal["nb", "zinb"] = "nb",
        parameterization: Literal["ksi-psi", "mu-theta"] = "ksi-psi",
        adversarial: bool = False,
        **module_kwargs,
    ):
        super().__init__(adata)
        keys = self._covariate_keys()
        n_cats = [len(self._categories(key)) for key in keys]
        unlabeled = self._setup_arg(PIANO_KEYS.UNLABELED_ARG, PIANO_KEYS.UNLABELED)
        codes = [
            self._categories(key).index(unlabeled) if unlabeled in self._categories(key) else -1
            for key in keys
        ]
        cont_cols = self._continuous_keys()
        mean, std = None, None
        if cont_cols:
            cont = np.asarray(
                self.adata_manager.get_from_registry(REGISTRY_KEYS.CONT_COVS_KEY), dtype=np.float64
            )
            mean = cont.mean(0)
            std = cont.std(0) + 1e-5 * np.abs(mean)  # piano.md §1.1: std += 1e-5 * mean
            std[std == 0] = 1.0
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_cats_per_key=n_cats,
            n_continuous=len(cont_cols),
            unlabeled_codes=codes,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            distribution=distribution,
            parameterization=parameterization,
            adversarial=adversarial,
            scale_continuous=bool(self._setup_arg(PIANO_KEYS.SCALE_CONTINUOUS, True)),
            cont_mean=mean,
            cont_std=std,
            **module_kwargs,
        )
        self.module._include_batch = self._include_batch()
        self._query_mode = False
        self._model_summary_string = (
            f"PIANO: n_hidden={n_hidden}, n_layers={n_layers}, n_latent={n_latent}, distribution={distribution}, "
            f"parameterization={parameterization}, adversarial={adversarial}, covariates={keys + cont_cols} "
            f"(P={self.module.n_covariates})"
        )
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ registry helpers
    def _setup_arg(self, name: str, default: Any) -> Any:
        return self.adata_manager.registry.get("setup_args", {}).get(name, default)

    def _include_batch(self) -> bool:
        return self._setup_arg("batch_key", None) is not None

    def _covariate_keys(self) -> list[str]:
        """Categorical obs keys in covariate order (batch first when registered)."""
        keys = []
        if self._include_batch():
            keys.append(self._setup_arg("batch_key", None))
        keys += list(self._setup_arg("categorical_covariate_keys", None) or [])
        return keys

    def _continuous_keys(self) -> list[str]:
        return list(self._setup_arg("continuous_covariate_keys", None) or [])

    def _categories(self, key: str) -> list[str]:
        if self._include_batch() and key == self._setup_arg("batch_key", None):
            mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
        else:
            mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY).mappings[key]
        return [str(c) for c in mapping]

    # ------------------------------------------------------------------ setup
    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        unlabeled_category: str = PIANO_KEYS.UNLABELED,
        scale_continuous: bool = True,
        **kwargs,
    ) -> None:
        """Register an AnnData for PIANO (piano.md §5.2).

        The covariate vector is ``[one-hot(batch)] ‖ one-hot(each categorical key) ‖ continuous``; cells whose
        value is ``unlabeled_category`` get an all-zero block for that key; continuous covariates are z-scored
        with the training mean/s.d. (kept in the model and reused for queries) unless ``scale_continuous=False``.

        Parameters
        ----------
        adata
            AnnData with raw counts in ``X`` or ``layers[layer]``.
        layer
            Layer with the counts.
        batch_key
            Optional batch column (treated like any other categorical covariate; PIANO has no privileged batch).
        categorical_covariate_keys
            Further categorical ``obs`` columns.
        continuous_covariate_keys
            Numerical ``obs`` columns.
        unlabeled_category
            Value meaning "unknown" (all-zero block).
        scale_continuous
            z-score continuous covariates.
        **kwargs
            Passed to :class:`~scvi.data.AnnDataManager` registration (``source_registry`` etc.).

        Returns
        -------
        None
            The registry is stored in the AnnData manager.

        Examples
        --------
        >>> PIANO.setup_anndata(adata, layer="counts", batch_key="sample", categorical_covariate_keys=["species"])  # doctest: +SKIP
        """
        X = get_matrix(adata, layer)
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        check_counts(X, where)
        if batch_key is not None:
            check_obs_key(adata, batch_key, "batch_key")
        for arg, keys in (
            ("categorical_covariate_keys", categorical_covariate_keys),
            ("continuous_covariate_keys", continuous_covariate_keys),
        ):
            if keys is not None and (isinstance(keys, str) or not isinstance(keys, Sequence)):
                raise ValueError(f"{arg} must be a list of obs column names, got {keys!r}.")
            for key in keys or []:
                check_obs_key(adata, key, arg)
        for key in continuous_covariate_keys or []:
            col = adata.obs[key]
            if not pd.api.types.is_numeric_dtype(col):
                raise ValueError(
                    f"continuous_covariate_keys: adata.obs[{key!r}] is not numeric (dtype {col.dtype})."
                )
            check_finite(np.asarray(col, dtype=float), f"adata.obs[{key!r}]")
        setup_method_args = cls._get_setup_method_args(**locals())
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True) -> AnnData:
        if adata is not None and self.adata is not None and adata is not self.adata:
            check_query_features(list(self.adata.var_names), list(adata.var_names))
            if list(adata.var_names) != list(self.adata.var_names):
                raise ValueError(
                    "The AnnData's genes are not in the model's order; call "
                    "`PIANO.prepare_query_anndata(adata, model)` first."
                )
            if self.adata_manager is not None and self.get_anndata_manager(adata) is None:
                # the encoder is covariate-free: unseen categories are fine for the latent (piano.md §5.4);
                # decoding them raises in `_covariate_matrix`
                if adata.is_view:
                    raise ValueError("adata is a view; pass adata.copy().")
                self._register_manager_for_instance(
                    self.adata_manager.transfer_fields(adata, extend_categories=True)
                )
        return super()._validate_anndata(adata, copy_if_view)

    # ------------------------------------------------------------------ covariates of a whole AnnData
    def _covariate_matrix(
        self, adata: AnnData | None = None, indices: Sequence[int] | None = None
    ) -> torch.Tensor:
        manager = self.get_anndata_manager(adata if adata is not None else self.adata, required=True)
        n = manager.adata.n_obs
        cols = []
        if self._include_batch():
            cols.append(np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).reshape(n, 1))
        if self._setup_arg("categorical_covariate_keys", None):
            cols.append(np.asarray(manager.get_from_registry(REGISTRY_KEYS.CAT_COVS_KEY)).reshape(n, -1))
        codes = torch.as_tensor(np.concatenate(cols, 1) if cols else np.zeros((n, 0)), dtype=torch.long)
        cont = None
        if self._continuous_keys():
            cont = torch.as_tensor(
                np.asarray(manager.get_from_registry(REGISTRY_KEYS.CONT_COVS_KEY), dtype=np.float32)
            )
        keys = self._covariate_keys()
        for k, n_k in enumerate(self.module.n_cats_per_key):
            if codes.shape[0] and int(codes[:, k].max()) >= n_k:
                raise KeyError(
                    f"adata.obs[{keys[k]!r}] has categories the model was not trained with; map them to "
                    f"{self._setup_arg(PIANO_KEYS.UNLABELED_ARG, PIANO_KEYS.UNLABELED)!r} or use "
                    "`PIANO.load_query_data` to learn them."
                )
        if indices is not None:
            idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
            codes = codes[idx]
            cont = None if cont is None else cont[idx]
        module = self.module
        with torch.no_grad():
            return module.covariates_from_codes(
                codes.to(module.device), None if cont is None else cont.to(module.device)
            )

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = D.BATCH_SIZE,
        accelerator: str = "auto",
        devices: int | str = "auto",
        fast: bool = True,
        compile: bool | Literal["auto"] = "auto",
        data_on_device: Literal["auto", "dense", "csr", "host"] | bool = "auto",
        train_size: float = 1.0,
        early_stopping: bool = False,
        checkpoint_every_n_epochs: int | None = None,
        checkpoint_dir: str | None = None,
        progress_bar: bool = True,
        seed: int | None = None,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train PIANO: the fast device-resident loop (default) or scvi's Lightning runner.

        Parameters
        ----------
        max_epochs
            Epochs. Default: 200 (piano.md §1.6), raised on small data so that training makes at least
            1,000 optimiser steps (:func:`default_max_epochs`; e.g. 1,000 epochs for 200 cells); 20 for a query
            model.
        batch_size
            Cells per step (steps per epoch = ``n // batch_size``, last partial batch dropped).
        accelerator, devices
            ``"auto"`` picks CUDA when present, else CPU (Lightning semantics for ``fast=False``).
        fast
            Use the §2.2 loop (no Lightning); ``False`` uses :class:`PIANOTrainingPlan` and ``TrainRunner``.
        compile
            ``torch.compile`` the fast step; ``"auto"`` = only on CUDA.
        data_on_device
            Layout of the resident data (see :func:`scvi_ext.piano._fast.choose_data_mode`).
        train_size
            Fraction for training in the Lightning path (1.0 = no validation split, as published).
        early_stopping
            Stop on the unweighted ELBO (min_delta 1.0 nats/cell, patience 5).
        checkpoint_every_n_epochs, checkpoint_dir
            Fast path: save the weights every k epochs.
        progress_bar
            Show progress.
        seed
            Seed of the fast loop's shuffling (default: from torch's global seed).
        plan_kwargs
            ``lr``, ``weight_decay``, ``max_kl_weight``, ``min_kl_weight``, ``n_epochs_kl_warmup`` (400);
            other keys go to :class:`PIANOTrainingPlan` (Lightning path).
        **trainer_kwargs
            Lightning ``Trainer`` arguments (``fast=False``); the fast path accepts only ``limit_train_batches``
            (an int: steps per epoch, for benchmarks).

        Returns
        -------
        None
            Fills ``self.history`` (``elbo_train``, ``reconstruction_loss_train``, ``kl_local_train``,
            ``kl_weight``, ...) and sets ``is_trained``.

        Examples
        --------
        >>> model.train(max_epochs=10)  # doctest: +SKIP
        >>> model.train(max_epochs=10, fast=False)  # doctest: +SKIP
        """
        plan_kwargs = dict(plan_kwargs or {})
        if max_epochs is not None and int(max_epochs) < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
        n_epochs_warm = plan_kwargs.pop("n_epochs_kl_warmup", D.N_EPOCHS_KL_WARMUP)
        max_kl = float(plan_kwargs.pop("max_kl_weight", D.MAX_KL_WEIGHT))
        min_kl = float(plan_kwargs.pop("min_kl_weight", D.MIN_KL_WEIGHT))
        lr = float(plan_kwargs.pop("lr", D.LR))
        wd = float(plan_kwargs.pop("weight_decay", D.WEIGHT_DECAY))
        if self._query_mode:  # beta fixed at the reference's final value; no weight decay on frozen columns
            final = float(self.module.kl_weight_final)
            beta = final if math.isfinite(final) else max_kl
            n_epochs_warm, max_kl, min_kl, wd = None, beta, beta, 0.0
        n = self.adata.n_obs
        if batch_size > n:  # drop_last would leave no step: one full-data batch instead
            logger.info("batch_size=%d > %d cells: using batch_size=%d", batch_size, n, n)
            batch_size = n
        steps_per_epoch = max(n // batch_size, 1)
        if max_epochs is None:
            max_epochs = 20 if self._query_mode else default_max_epochs(n, batch_size)
        if fast:
            limit = trainer_kwargs.pop("limit_train_batches", None)
            if trainer_kwargs:
                raise ValueError(f"Lightning trainer arguments {sorted(trainer_kwargs)} need fast=False.")
            if plan_kwargs:
                raise ValueError(f"Unknown plan_kwargs for the fast path: {sorted(plan_kwargs)}.")
            if accelerator in ("auto", "gpu", "cuda"):
                use_cuda = torch.cuda.is_available()
                if accelerator in ("gpu", "cuda") and not use_cuda:
                    raise ValueError(f"accelerator={accelerator!r} but CUDA is not available.")
            else:
                use_cuda = False
            device = torch.device("cuda") if use_cuda else torch.device("cpu")
            do_compile = use_cuda if compile == "auto" else bool(compile)
            self.module.to(device)
            X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
            resident = make_resident_data(X, self._covariate_matrix().cpu(), device, data_on_device)
            self._data_mode = resident.mode
            timings: dict = {}
            history, final_beta = fast_train(
                self.module,
                resident,
                max_epochs=int(max_epochs),
                batch_size=batch_size,
                lr=lr,
                weight_decay=wd,
                n_epochs_kl_warmup=n_epochs_warm,
                max_kl_weight=max_kl,
                min_kl_weight=min_kl,
                compile=do_compile,
                early_stopping=early_stopping,
                checkpoint_every_n_epochs=checkpoint_every_n_epochs,
                checkpoint_dir=checkpoint_dir,
                progress_bar=progress_bar,
                seed=seed,
                timings=timings,
                limit_train_batches=limit,
            )
            self.fast_timings_ = timings
            self.history_ = history
            self.trainer = None
        else:
            n_steps = int(n_epochs_warm * steps_per_epoch) if n_epochs_warm else None
            plan_kwargs.update(
                lr=lr,
                weight_decay=wd,
                max_kl_weight=max_kl,
                min_kl_weight=min_kl,
                n_steps_kl_warmup=n_steps,
                n_epochs_kl_warmup=None,
            )
            datasplitter_kwargs = trainer_kwargs.pop("datasplitter_kwargs", {}) or {}
            datasplitter_kwargs.setdefault("drop_last", True)
            trainer_kwargs.setdefault("enable_progress_bar", progress_bar)
            super().train(
                max_epochs=int(max_epochs),
                accelerator=accelerator,
                devices=devices,
                train_size=train_size,
                batch_size=batch_size,
                early_stopping=early_stopping,
                datasplitter_kwargs=datasplitter_kwargs,
                plan_kwargs=plan_kwargs,
                **trainer_kwargs,
            )
            final_beta = kl_weight_at(
                int(max_epochs) - 1, steps_per_epoch - 1, steps_per_epoch, n_epochs_warm, max_kl, min_kl
            )
        if not self._query_mode:
            self.module.kl_weight_final.fill_(final_beta)
        self.module.eval()
        self.is_trained_ = True

    # ------------------------------------------------------------------ outputs
    @torch.inference_mode()
    def _decode_batches(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | None,
        covariates: str | Mapping[str, Any] | None,
        give_mean_z: bool,
        batch_size: int,
        output: str,
    ) -> np.ndarray:
        adata = self._validate_anndata(adata)
        cov_all = self._covariate_matrix(adata, indices)
        cov_all = self._replace_covariates(cov_all, covariates)
        dl = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size, shuffle=False)
        out, start = [], 0
        self.module.eval()
        for tensors in dl:
            inf = self.module.inference(**self.module._get_inference_input(tensors))
            z = inf["qz"].loc if give_mean_z else inf["z"]
            x = tensors[REGISTRY_KEYS.X_KEY].to(self.module.device)
            cov = cov_all[start : start + x.shape[0]]
            start += x.shape[0]
            gen = self.module.generative(z=z, library=x.sum(1, keepdim=True), cov=cov)
            out.append(gen[output].cpu().numpy())
        return np.concatenate(out, 0)

    def _replace_covariates(
        self, cov: torch.Tensor, covariates: str | Mapping[str, Any] | None
    ) -> torch.Tensor:
        """Counterfactual covariates (piano.md §3.2): ``None`` keeps, ``"marginal"`` averages every categorical key."""
        if covariates is None:
            return cov
        keys = self._covariate_keys()
        cont_keys = self._continuous_keys()
        if isinstance(covariates, str):
            if covariates != PIANO_KEYS.MARGINAL:
                raise ValueError(f"covariates must be None, 'marginal' or a dict, got {covariates!r}.")
            covariates = dict.fromkeys(keys, PIANO_KEYS.MARGINAL)
        if not isinstance(covariates, Mapping):
            raise ValueError(
                f"covariates must be None, 'marginal' or a dict, got {type(covariates).__name__}."
            )
        unknown = set(covariates) - set(keys) - set(cont_keys)
        if unknown:
            raise KeyError(
                f"covariates names {sorted(unknown)}, which are not model covariates ({keys + cont_keys})."
            )
        cov = cov.clone()
        unlabeled = self._setup_arg(PIANO_KEYS.UNLABELED_ARG, PIANO_KEYS.UNLABELED)
        offset = 0
        for key, n_k in zip(keys, self.module.n_cats_per_key, strict=True):
            if key in covariates:
                cats = self._categories(key)
                value = covariates[key]
                block = torch.zeros(n_k, device=cov.device)
                if isinstance(value, str) and value == PIANO_KEYS.MARGINAL:
                    real = [i for i, c in enumerate(cats) if c != unlabeled]
                    block[real] = 1.0 / len(real)
                else:
                    values = (
                        [value] if isinstance(value, str) or not isinstance(value, Sequence) else list(value)
                    )
                    for v in values:
                        if str(v) not in cats:
                            raise KeyError(
                                f"covariates[{key!r}]: {v!r} is not a category of {key!r} ({cats})."
                            )
                        block[cats.index(str(v))] += 1.0 / len(values)
                cov[:, offset : offset + n_k] = block
            offset += n_k
        for j, key in enumerate(cont_keys):
            if key in covariates:
                v = float(covariates[key])
                if self.module.scale_continuous:
                    v = (v - float(self.module.cont_mean[j])) / float(self.module.cont_std[j])
                cov[:, offset + j] = v
        return cov

    def get_counterfactual_expression(
        self,
        adata: AnnData | None = None,
        covariates: str | Mapping[str, Any] | None = PIANO_KEYS.MARGINAL,
        indices: Sequence[int] | None = None,
        give_mean_z: bool = False,
        batch_size: int = 4096,
        return_numpy: bool = False,
    ) -> pd.DataFrame | np.ndarray:
        """Expected counts ``mu`` after replacing the covariates (piano.md §3.2).

        The encoder gives ``z`` (one posterior draw, or the mean with ``give_mean_z=True``); the decoder and
        GLM are evaluated with the replaced covariates and each cell's own library size.

        Parameters
        ----------
        adata
            AnnData (default: the training data).
        covariates
            ``"marginal"``: every categorical block set to ``1/n_k`` (all categories averaged), continuous
            kept; ``None``: original covariates (the reconstruction mean); a dict ``{key: category | [c1, c2] |
            "marginal"}`` for categorical keys and ``{key: float}`` for continuous keys (raw scale); unnamed
            keys keep their values.
        indices
            Cells to use.
        give_mean_z
            Use the posterior mean instead of a sample.
        batch_size
            Cells per forward pass.
        return_numpy
            Return an array instead of a DataFrame.

        Returns
        -------
        pandas.DataFrame or numpy.ndarray
            Cells x genes expected counts.

        Examples
        --------
        >>> cf = model.get_counterfactual_expression(covariates="marginal")  # doctest: +SKIP
        >>> cf = model.get_counterfactual_expression(covariates={"sample": "donor1"})  # doctest: +SKIP
        """
        mu = self._decode_batches(adata, indices, covariates, give_mean_z, batch_size, "mu")
        if return_numpy:
            return mu
        ad = self._validate_anndata(adata)
        obs = ad.obs_names if indices is None else ad.obs_names[np.asarray(indices)]
        return pd.DataFrame(mu, index=obs, columns=ad.var_names)

    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: str | int | Sequence[str | int] | None = None,
        gene_list: Sequence[str] | None = None,
        library_size: float | Literal["latent"] = 1.0,
        n_samples: int = 1,
        n_samples_overall: int | None = None,
        return_mean: bool = True,
        covariates: str | Mapping[str, Any] | None = None,
        give_mean_z: bool | None = None,
        batch_size: int | None = None,
        return_numpy: bool = False,
        weights: Literal["uniform", "importance"] | None = None,
        **importance_weighting_kwargs,
    ) -> pd.DataFrame | np.ndarray:
        """Decoder gene proportions ``rho`` (``library_size=1``), scaled, or the model mean ``mu``.

        Signature-compatible with :meth:`scvi.model.base.RNASeqMixin.get_normalized_expression`, so scvi's
        ``differential_expression`` (which calls this with ``n_samples=1`` and ``transform_batch``) works.

        Parameters
        ----------
        adata, indices
            Cells (default: all of the training data).
        transform_batch
            A batch category (or a list: averaged) used for every cell instead of its own batch; shorthand for
            ``covariates={batch_key: transform_batch}``.
        gene_list
            Return only these genes.
        library_size
            A number multiplies ``rho``; ``"latent"`` returns the NB-GLM mean ``mu`` (includes the learned
            library and covariate terms).
        n_samples
            Posterior draws of ``z`` to average (``1`` with ``give_mean_z`` unset uses the posterior mean).
        n_samples_overall
            Decode this many cells drawn with replacement from ``indices`` (scvi's semantics, used by
            ``differential_expression``), one posterior draw each.
        return_mean
            With ``n_samples > 1``: average the draws (``True``) or return ``[n_samples, cells, genes]``.
        covariates
            As :meth:`get_counterfactual_expression` (``None`` keeps each cell's own).
        give_mean_z
            Decode the posterior mean (default: ``True`` when ``n_samples == 1``).
        batch_size
            Cells per forward pass (default 4096).
        return_numpy
            Return an array instead of a DataFrame (always an array for 3-D output).
        weights
            ``None``/``"uniform"`` only; importance weighting (scvi's ``"importance"``) is not implemented.
        **importance_weighting_kwargs
            Accepted for signature compatibility; must be empty.

        Returns
        -------
        pandas.DataFrame or numpy.ndarray
            Cells x genes (or samples x cells x genes).

        Examples
        --------
        >>> rho = model.get_normalized_expression(library_size=1e4)  # doctest: +SKIP
        >>> de = model.differential_expression(groupby="cell_type", group1="B")  # doctest: +SKIP
        """
        if weights not in (None, "uniform"):
            raise NotImplementedError(f"weights={weights!r}: PIANO supports only uniform weights.")
        if importance_weighting_kwargs:
            raise TypeError(f"Unexpected arguments {sorted(importance_weighting_kwargs)}.")
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        if transform_batch is not None:
            if not self._include_batch():
                raise ValueError("transform_batch needs a model set up with batch_key.")
            if covariates is not None and not isinstance(covariates, Mapping):
                raise ValueError("Pass either transform_batch or covariates='marginal', not both.")
            batch_key = self._setup_arg("batch_key", None)
            covariates = {**dict(covariates or {}), batch_key: transform_batch}
        batch_size = 4096 if batch_size is None else int(batch_size)
        if n_samples_overall is not None:
            pool = np.arange(self._validate_anndata(adata).n_obs) if indices is None else np.asarray(indices)
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))  # follows torch's seed
            indices = rng.choice(pool, int(n_samples_overall))
            n_samples, give_mean_z = 1, False
        output = "mu" if library_size == "latent" else "rho"
        scale = 1.0 if library_size == "latent" else float(library_size)
        if give_mean_z is None:
            give_mean_z = n_samples == 1
        draws = [
            self._decode_batches(adata, indices, covariates, give_mean_z, batch_size, output) * scale
            for _ in range(1 if give_mean_z else int(n_samples))
        ]
        ad = self._validate_anndata(adata)
        genes = np.ones(ad.n_vars, dtype=bool)
        if gene_list is not None:
            genes = np.isin(ad.var_names, list(gene_list))
            if not genes.any():
                raise ValueError("None of the genes in gene_list are in the data.")
        if len(draws) > 1 and not return_mean:
            return np.stack(draws, 0)[..., genes]
        vals = (draws[0] if len(draws) == 1 else np.mean(draws, 0))[:, genes]
        if return_numpy:
            return vals
        obs = ad.obs_names if indices is None else ad.obs_names[np.asarray(indices)]
        return pd.DataFrame(vals, index=obs, columns=ad.var_names[genes])

    @torch.inference_mode()
    def get_latent_library_size(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Library size of each cell: PIANO uses the observed total count (a GLM input, not a latent variable).

        Parameters
        ----------
        adata, indices
            Cells (default: all of the training data).
        give_mean, batch_size
            Accepted for compatibility with :class:`scvi.model.base.RNASeqMixin`; the value is observed.

        Returns
        -------
        numpy.ndarray
            ``[cells, 1]`` total counts.

        Examples
        --------
        >>> lib = model.get_latent_library_size()  # doctest: +SKIP
        """
        adata = self._validate_anndata(adata)
        X = self.get_anndata_manager(adata, required=True).get_from_registry(REGISTRY_KEYS.X_KEY)
        if indices is not None:
            X = X[np.asarray(indices)]
        return np.asarray(X.sum(1), dtype=np.float64).reshape(-1, 1)

    # ------------------------------------------------------------------ query mapping
    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: str | PIANO,
        inplace_subset_query_vars: bool = False,
        accelerator: str = "auto",
        device: int | str = "auto",
        unfrozen: bool = False,
        freeze_expression: bool = True,
        **kwargs,
    ) -> PIANO:
        """Reference mapping (piano.md §5.4): extend the categories, pad the per-key tensors, freeze the rest.

        Embedding a query needs no training (the encoder is covariate-free): ``prepare_query_anndata`` +
        ``reference.get_latent_representation(query)`` suffice. This surgery is for generative outputs on new
        categories: every covariate tensor grows on its last dimension (GLM columns start at 0 = no effect), and
        unless ``unfrozen=True`` only the new columns are trained (gradient hooks zero the old ones), with
        BatchNorm statistics frozen and dropout off, so reference-cell latents do not change. Query training
        keeps ``beta`` at the reference's final value and 20 epochs by default.

        Parameters
        ----------
        adata
            Query AnnData with the reference's genes (see ``prepare_query_anndata``) and covariate columns.
        reference_model
            Trained :class:`PIANO` or a saved directory.
        inplace_subset_query_vars
            Subset the query's genes to the reference's in place.
        accelerator, device
            Where to put the model.
        unfrozen
            Train every parameter (changes the encoder and the latents).
        freeze_expression
            Kept for scvi API compatibility (the encoder is frozen unless ``unfrozen``).
        **kwargs
            Ignored scvi surgery switches.

        Returns
        -------
        PIANO
            The query model.

        Examples
        --------
        >>> q = PIANO.load_query_data(query, ref)  # doctest: +SKIP
        >>> q.train(max_epochs=10)  # doctest: +SKIP
        """
        _, var_names, _, _ = _get_loaded_data(reference_model, device="cpu")
        check_query_features(list(var_names), list(adata.var_names))
        model = super().load_query_data(
            adata,
            reference_model,
            inplace_subset_query_vars=inplace_subset_query_vars,
            accelerator=accelerator,
            device=device,
            unfrozen=True,
        )
        module = model.module
        if module.classifier is not None:  # its output would need padding on dim 0 (§5.4)
            module.classifier = None
        _, _, ref_state, _ = _get_loaded_data(reference_model, device="cpu")
        model._query_mode = True
        model._n_ref_categories = [
            int(ref_state[f"glm_w_mu_cat.{k}"].shape[1]) for k in range(len(module.n_cats_per_key))
        ]
        with torch.no_grad():  # new GLM columns start at "no effect"
            for k, n_old in enumerate(model._n_ref_categories):
                module.glm_w_mu_cat[k][:, n_old:] = 0.0
                module.glm_w_psi_cat[k][:, n_old:] = 0.0
        if not unfrozen:
            for p in module.parameters():
                p.requires_grad_(False)
            for k, n_old in enumerate(model._n_ref_categories):
                if module.n_cats_per_key[k] == n_old:
                    continue
                for plist in (module.decoder_cov_cat, module.glm_w_mu_cat, module.glm_w_psi_cat):
                    par = plist[k]
                    par.requires_grad_(True)
                    mask = torch.zeros_like(par)
                    mask[:, n_old:] = 1.0
                    par.register_hook(lambda g, m=mask: g * m.to(g.device))
            for m in module.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.momentum = 0.0
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0
        return model
