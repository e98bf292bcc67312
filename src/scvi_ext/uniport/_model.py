"""The uniPort model (Cao et al., Nat. Commun. 13:7419, 2022) as a scvi-tools model."""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField, NumericalObsField, ObsmField
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from .._validation import check_finite, check_obs_key, get_matrix
from ._constants import BN_MODES, DEFAULTS, ES_MONITORS, KEYS, LOSSES, MODES
from ._deconvolution import deconvolve_plan
from ._fast import ResidentFields, check_fast_kwargs, fast_train
from ._module import UniPortVAE
from ._ot import (
    GlobalPlanStore,
    UniPortTrainingPlan,
    _RestoreBestEarlyStopping,
    cumulative_within_index,
    resolve_monitor,
)
from ._sampler import BalancedSourceSampler, unwrap_batch
from ._transfer import knn_transfer, plan_label_scores

logger = logging.getLogger(__name__)


def _adam(params, lr: float, weight_decay: float, eps: float) -> torch.optim.Adam:
    """Adam as the reference (lr 2e-4, weight decay 5e-4, eps 1e-8), one fused kernel on CPU/CUDA.

    The same update rule as the reference's single-tensor Adam (fused: one kernel over all parameters, ~4x
    faster than ``foreach`` on one CPU thread); ``foreach`` on other devices.
    """
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    kind = {"fused": True} if fused else {"foreach": True}
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, eps=eps, **kind)


def label_reweight(labels: Sequence) -> np.ndarray:
    """Per-cell weights giving every label the same total weight: ``w_i = N / (C * n_{label(i)})``.

    The reference's ``up.label_reweight`` (spec §4), vectorised; use it per dataset for
    :meth:`UniPort.setup_anndata` ``weight_key``.

    Parameters
    ----------
    labels
        One label per cell.

    Returns
    -------
    numpy.ndarray
        Weights (float32), mean 1.

    Examples
    --------
    >>> label_reweight(["a", "a", "a", "b"]).tolist()
    [0.6666666865348816, 0.6666666865348816, 0.6666666865348816, 2.0]
    """
    labels = np.asarray(labels).astype(str)
    if labels.size == 0:
        raise ValueError("labels is empty.")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return (len(labels) / (len(counts) * counts[inverse])).astype(np.float32)


def _check_weights(adata: AnnData, weight_key: str, source_key: str | None, mode: str) -> None:
    if (
        weight_key not in adata.obs.columns
    ):  # (check_obs_key refuses NaN, which marks unweighted datasets here)
        raise KeyError(f"weight_key={weight_key!r} is not a column of adata.obs.")
    if mode != MODES.HORIZONTAL:
        raise ValueError(f"weight_key (label weights) is supported in mode 'h' only, got mode={mode!r}.")
    w = pd.to_numeric(adata.obs[weight_key], errors="coerce").to_numpy(dtype=float)
    if np.isinf(w).any() or (w[~np.isnan(w)] < 0).any():
        raise ValueError(f"obs[{weight_key!r}] must hold finite weights >= 0 (NaN = unweighted dataset).")
    src = adata.obs[source_key].astype(str).to_numpy()
    for s in np.unique(src):
        ws = w[src == s]
        nan = np.isnan(ws)
        if nan.any() and not nan.all():
            raise ValueError(
                f"obs[{weight_key!r}] mixes weights and NaN within dataset {s!r}: weight all of its cells or none."
            )
        if not nan.any() and ws.sum() <= 0:
            raise ValueError(f"obs[{weight_key!r}] sums to 0 in dataset {s!r}.")


def _values(X) -> np.ndarray:
    return np.asarray(X.data if sp.issparse(X) else X)


class UniPort(UnsupervisedTrainingMixin, BaseModelClass):
    """uniPort: coupled VAE + minibatch unbalanced optimal transport for single-cell data integration.

    Cao K., Gong Q., Hong Y., Wan L. (2022), "A unified computational framework for single-cell data
    integration with optimal transport", *Nature Communications* 13:7419. Spec: ``shared/specs/uniport.md``.

    One encoder reads the features common to all datasets (mode ``h``); a common decoder with
    domain-specific batch norm and one decoder per dataset reconstruct the common and the dataset-specific
    features (BCE x 2000); an unbalanced entropic OT cost between each query dataset's latent Gaussians and the
    reference dataset's (squared W2 cost, proximal Sinkhorn plan from :func:`scvi_ext.ot.sinkhorn_unbalanced`)
    aligns them. Mode ``v`` (paired modalities) drops OT; mode ``d`` uses one encoder/decoder per dataset.
    The global OT plan (``train(save_ot=True)``) gives label transfer and spatial deconvolution.
    :meth:`train` runs uniPort's own training loop by default (``fast=True``: the same loss, optimiser, samplers
    and early stopping as the Lightning runner ``fast=False``, without Lightning's per-step overhead).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (usually from :func:`prepare_anndata`).
    n_latent, n_hidden
        Latent size (16) and encoder hidden units (1024).
    lambda_s, lambda_recon, lambda_kl, lambda_ot
        Loss weights: specific reconstruction, reconstruction, KL, OT (spec §4; defaults 0.5, 1, 0.5, 1).
    reg, reg_m
        Relative entropic regularisation and marginal relaxation of the minibatch UOT (0.1, 1.0).
    n_outer, n_inner
        Proximal steps and Sinkhorn iterations per minibatch solve (10, 10).
    loss_type
        ``"bce"``, ``"mse"`` or ``"l1"``.
    recon_scale
        Reconstruction scale (2000).
    reference_source
        Name of the reference dataset of the OT term (default: the last category, like ``ref_id=S-1``).
    prior_alpha
        If set (and ``labels_key`` was registered), cost multiplier ``1/alpha`` for equal labels and
        ``alpha`` otherwise, inside the solver (``up.get_prior``).

    Examples
    --------
    >>> from scvi_ext.uniport import UniPort, prepare_anndata
    >>> ad = prepare_anndata({"atac": atac_gene_activity, "rna": rna})  # doctest: +SKIP
    >>> UniPort.setup_anndata(ad, source_key="source")  # doctest: +SKIP
    >>> model = UniPort(ad)  # doctest: +SKIP
    >>> model.train(max_iterations=2000, save_ot=True)  # doctest: +SKIP
    >>> z = model.get_latent_representation()  # doctest: +SKIP
    """

    _module_cls = UniPortVAE
    _training_plan_cls = UniPortTrainingPlan

    def __init__(
        self,
        adata: AnnData,
        n_latent: int = DEFAULTS.N_LATENT,
        n_hidden: int = DEFAULTS.N_HIDDEN,
        lambda_s: float = DEFAULTS.LAMBDA_S,
        lambda_recon: float = DEFAULTS.LAMBDA_RECON,
        lambda_kl: float = DEFAULTS.LAMBDA_KL,
        lambda_ot: float = DEFAULTS.LAMBDA_OT,
        reg: float = DEFAULTS.REG,
        reg_m: float = DEFAULTS.REG_M,
        n_outer: int = DEFAULTS.N_OUTER,
        n_inner: int = DEFAULTS.N_INNER,
        loss_type: str = LOSSES.BCE,
        recon_scale: float = DEFAULTS.RECON_SCALE,
        reference_source: str | None = None,
        prior_alpha: float | None = None,
    ):
        super().__init__(adata)
        if loss_type not in LOSSES:
            raise ValueError(f"loss_type must be one of {list(LOSSES)}, got {loss_type!r}.")
        setup = self.adata_manager.registry["setup_args"]
        self.mode = setup["mode"]
        self.sources = list(
            self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
        )
        if reference_source is None:
            reference_idx = len(self.sources) - 1
        elif str(reference_source) in map(str, self.sources):
            reference_idx = [str(s) for s in self.sources].index(str(reference_source))
        else:
            raise ValueError(
                f"reference_source={reference_source!r} is not a dataset; choose one of {self.sources}."
            )
        if prior_alpha is not None and REGISTRY_KEYS.LABELS_KEY not in self.adata_manager.data_registry:
            raise ValueError("prior_alpha needs labels: call setup_anndata(..., labels_key=...) first.")
        self.reference_idx = reference_idx
        self.lambda_ot = lambda_ot
        weighted = None
        if KEYS.WEIGHT in self.adata_manager.data_registry:
            w = np.asarray(self.adata_manager.get_from_registry(KEYS.WEIGHT), dtype=float).ravel()
            codes = self._source_codes()
            weighted = [bool(np.isfinite(w[codes == k]).all()) for k in range(len(self.sources))]
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_sources=len(self.sources),
            specific_widths=setup["specific_widths"],
            reference_idx=reference_idx,
            mode=self.mode,
            n_latent=n_latent,
            n_hidden=n_hidden,
            lambda_s=lambda_s,
            lambda_recon=lambda_recon,
            lambda_kl=lambda_kl,
            reg=reg,
            reg_m=reg_m,
            n_outer=n_outer,
            n_inner=n_inner,
            loss_type=loss_type,
            recon_scale=recon_scale,
            prior_alpha=prior_alpha,
            weighted_sources=weighted,
        )
        self._plan_store: GlobalPlanStore | None = None
        self.early_stopped_ = False
        self.early_stopping_monitor_: str | None = None
        self._model_summary_string = (
            f"uniPort mode {self.mode!r}: {len(self.sources)} dataset(s), reference {self.sources[reference_idx]!r}, "
            f"{self.summary_stats.n_vars} input features, specific widths {setup['specific_widths']}"
        )
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        source_key: str | None = KEYS.SOURCE_OBS,
        layer: str | None = None,
        mode: str = MODES.HORIZONTAL,
        specific_obsm_key: str | None = KEYS.SPECIFIC_OBSM,
        specific_widths: Sequence[int] | None = None,
        labels_key: str | None = None,
        weight_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Register uniPort's fields: input block (X/layer), dataset (source), specific block, row indices.

        Adds ``obs['_indices']`` (row numbers that address the global OT plan, as scvi's DestVI/MultiVI do).

        Parameters
        ----------
        adata
            Output of :func:`prepare_anndata` or an equivalent AnnData: values in ``[0, 1]``.
        source_key
            ``obs`` column naming each cell's dataset (``None`` only in mode ``v``).
        layer
            Layer with the input block (``None``: X).
        mode
            ``"h"`` (shared features), ``"v"`` (paired modalities) or ``"d"`` (different features).
        specific_obsm_key
            ``obsm`` key of the zero-padded specific blocks (mode ``h``) or extra modalities (mode ``v``);
            ignored when absent (uniPort-cm).
        specific_widths
            Width of each dataset's block in source-category order (mode ``d``: input widths); default
            from ``adata.uns['uniport']`` written by :func:`prepare_anndata`.
        labels_key
            Optional cell-type column (for ``prior_alpha``).
        weight_key
            Optional ``obs`` column of per-cell weights (mode ``h``; reference ``label_weight``, e.g. from
            :func:`~scvi_ext.uniport.label_reweight` per dataset). A dataset whose weights are all NaN is
            unweighted; weights must be finite and >= 0 with a positive sum per weighted dataset.
        **kwargs
            Unused; kept for scvi-tools signature compatibility.

        Raises
        ------
        KeyError, ValueError
            Missing keys, fewer than 2 datasets (modes ``h``/``d``), a dataset with zero cells, no input
            features, NaN or values outside ``[0, 1]``.

        Examples
        --------
        >>> UniPort.setup_anndata(ad, source_key="source")  # doctest: +SKIP
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}.")
        if adata.n_vars == 0:
            raise ValueError("adata has no features: uniPort needs common features (mode 'h') or inputs.")
        if adata.n_obs == 0:
            raise ValueError("adata has zero cells.")
        X = get_matrix(adata, layer)
        check_finite(X, "adata.X" if layer is None else f"layer {layer!r}")
        vals = _values(X)
        if vals.size and (vals.min() < 0 or vals.max() > 1):
            raise ValueError(
                f"uniPort's inputs must lie in [0, 1] (sigmoid decoders + BCE), got [{vals.min():g}, {vals.max():g}]; "
                "build the AnnData with scvi_ext.uniport.prepare_anndata (log-normalised, MaxAbs-scaled)."
            )
        uns = adata.uns.get(KEYS.UNS, {})
        if source_key is None:
            if mode != MODES.VERTICAL:
                raise ValueError(f"mode={mode!r} needs source_key naming the dataset of each cell.")
            sources = ["paired"]
        else:
            check_obs_key(adata, source_key, "source_key")
            col = adata.obs[source_key]
            counts = col.value_counts(sort=False)
            empty = counts.index[counts.to_numpy() == 0].tolist()
            if empty:
                raise ValueError(f"Dataset(s) {empty} of source_key={source_key!r} have zero cells.")
            sources = (
                list(col.cat.categories) if hasattr(col, "cat") else sorted(col.unique().tolist(), key=str)
            )
            if mode != MODES.VERTICAL and len(sources) < 2:
                raise ValueError(
                    f"source_key={source_key!r} has {len(sources)} dataset(s); mode {mode!r} integrates at least 2."
                )
        has_specific = (
            specific_obsm_key is not None and specific_obsm_key in adata.obsm and mode != MODES.DIAGONAL
        )
        feats = uns.get(KEYS.UNS_SPECIFIC_FEATURES, {})
        if specific_widths is None:
            if mode == MODES.DIAGONAL:
                specific_widths = [len(feats[s]) if s in feats else adata.n_vars for s in sources]
            elif mode == MODES.VERTICAL:
                specific_widths = (
                    [len(feats[m]) for m in uns.get("modalities", [])[1:]] if has_specific else []
                )
            elif has_specific:
                specific_widths = (
                    [len(feats.get(s, [])) for s in sources]
                    if feats
                    else ([int(np.asarray(adata.obsm[specific_obsm_key]).shape[1])] * len(sources))
                )
            else:
                specific_widths = [0] * len(sources)
        specific_widths = [int(w) for w in specific_widths]
        if mode != MODES.VERTICAL and len(specific_widths) != len(sources):
            raise ValueError(
                f"specific_widths needs one width per dataset ({len(sources)}), got {specific_widths}."
            )
        if mode == MODES.DIAGONAL and max(specific_widths) > adata.n_vars:
            raise ValueError(
                f"specific_widths {specific_widths} exceed the padded input width {adata.n_vars}."
            )
        if has_specific:
            S = np.asarray(adata.obsm[specific_obsm_key])
            need = sum(specific_widths) if mode == MODES.VERTICAL else max(specific_widths, default=0)
            if S.shape[1] < need:
                raise ValueError(
                    f"obsm[{specific_obsm_key!r}] has {S.shape[1]} columns but the widths need {need}."
                )
            check_finite(S, f"obsm[{specific_obsm_key!r}]")
            if S.size and (S.min() < 0 or S.max() > 1):
                raise ValueError(f"obsm[{specific_obsm_key!r}] must lie in [0, 1].")
        if weight_key is not None:
            _check_weights(adata, weight_key, source_key, mode)
        adata.obs[KEYS.INDICES_OBS] = np.arange(adata.n_obs)
        setup_method_args = cls._get_setup_method_args(**locals())
        setup_method_args["setup_args"]["specific_widths"] = specific_widths
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, source_key),
            NumericalObsField(REGISTRY_KEYS.INDICES_KEY, KEYS.INDICES_OBS),
        ]
        if has_specific and sum(specific_widths) > 0:
            fields.append(ObsmField(KEYS.SPECIFIC, specific_obsm_key))
        if labels_key is not None:
            fields.append(CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key))
        if weight_key is not None:
            fields.append(NumericalObsField(KEYS.WEIGHT, weight_key))
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    @classmethod
    def setup_mudata(
        cls,
        mdata,
        modalities: Sequence[str] | None = None,
        source_key: str | None = None,
        modality: str | None = None,
        mode: str = MODES.HORIZONTAL,
        labels_key: str | None = None,
        layer: str | None = None,
        **prepare_kwargs: Any,
    ) -> AnnData:
        """Build and register uniPort's AnnData from a MuData; returns it (pass it to :class:`UniPort`).

        Two layouts: one modality per dataset (``source_key=None``; e.g. ``{"atac": gene activity, "rna": rna}``,
        or paired modalities with ``mode="v"``), or one modality holding all datasets with an ``obs`` column
        ``source_key`` naming each cell's dataset (``modality`` picks it; default the first). Raw counts go
        through :func:`~scvi_ext.uniport.prepare_anndata` (the last dataset is the OT reference), then
        :meth:`setup_anndata`. Unlike scvi-tools' MuData models the model is built on the returned AnnData,
        because uniPort's common and dataset-specific blocks are normalised separately (spec §10).

        Parameters
        ----------
        mdata
            :class:`mudata.MuData` (or any object with a ``.mod`` mapping of name -> AnnData).
        modalities
            Modalities to use, in order (default all); one-modality-per-dataset layout.
        source_key, modality
            Dataset column, and the modality that holds all datasets (second layout).
        mode
            ``"h"``, ``"v"`` or ``"d"``.
        labels_key
            Optional label column (of each modality's ``obs``, or ``mdata.obs``) copied to the result and
            registered (empty string where a dataset lacks it).
        layer
            Counts layer (default ``X``).
        **prepare_kwargs
            Passed to :func:`~scvi_ext.uniport.prepare_anndata` (HVG numbers, ``input_reps``, ...).

        Returns
        -------
        anndata.AnnData
            The registered AnnData.

        Raises
        ------
        KeyError, ValueError
            Unknown modality or column, fewer than 2 datasets (modes ``h``/``d``), no shared features.

        Examples
        --------
        >>> ad = UniPort.setup_mudata(mdata, modalities=["atac", "rna"])  # doctest: +SKIP
        >>> model = UniPort(ad)  # doctest: +SKIP
        """
        from ._data import prepare_anndata

        mods = getattr(mdata, "mod", None)
        if not isinstance(mods, Mapping):
            raise TypeError("mdata must be a MuData (an object with a `.mod` mapping of name -> AnnData).")
        if source_key is None:
            names = list(mods) if modalities is None else list(modalities)
            missing = [n for n in names if n not in mods]
            if missing:
                raise KeyError(f"modalities {missing} are not in mdata.mod (available: {list(mods)}).")
            datasets = {n: mods[n] for n in names}
        else:
            name = modality if modality is not None else next(iter(mods))
            if name not in mods:
                raise KeyError(f"modality={name!r} is not in mdata.mod (available: {list(mods)}).")
            one = mods[name]
            check_obs_key(one, source_key, "source_key")
            col = one.obs[source_key]
            cats = [
                str(c)
                for c in (col.cat.categories if hasattr(col, "cat") else dict.fromkeys(col.astype(str)))
            ]
            values = col.astype(str).to_numpy()
            datasets = {c: one[values == c] for c in cats if (values == c).any()}
        prepared = prepare_anndata(datasets, mode=mode, layer=layer, **prepare_kwargs)
        if labels_key is not None:
            parts = []
            for d in datasets.values():
                obs = d.obs if labels_key in d.obs else None
                if obs is None and hasattr(mdata, "obs") and labels_key in mdata.obs:
                    obs = mdata.obs.reindex(d.obs_names)
                parts.append(
                    obs[labels_key].astype(str).to_numpy()
                    if obs is not None
                    else np.full(d.n_obs, "", object)
                )
                if mode == MODES.VERTICAL:
                    break  # one row per paired cell
            if all(not (p != "").any() for p in parts):
                raise KeyError(f"labels_key={labels_key!r} is not a column of any dataset (or of mdata.obs).")
            prepared.obs[labels_key] = np.concatenate(parts)
        cls.setup_anndata(
            prepared,
            source_key=None if mode == MODES.VERTICAL else KEYS.SOURCE_OBS,
            mode=mode,
            labels_key=labels_key,
        )
        return prepared

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_iterations: int = DEFAULTS.MAX_ITERATIONS,
        max_epochs: int | None = None,
        batch_size: int = DEFAULTS.BATCH_SIZE,
        lr: float = DEFAULTS.LR,
        weight_decay: float = DEFAULTS.WEIGHT_DECAY,
        early_stopping: bool = True,
        early_stopping_patience: int = DEFAULTS.PATIENCE,
        early_stopping_monitor: str = ES_MONITORS.AUTO,
        save_ot: bool = False,
        sampler: str = "random",
        fast: bool = True,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        plan_kwargs: dict | None = None,
        **trainer_kwargs: Any,
    ):
        """Train with Adam on minibatches of ``batch_size`` rows drawn from all datasets (spec §5).

        Parameters
        ----------
        max_iterations
            Target number of minibatch steps (reference ``iteration``, default 30,000); gives
            ``max_epochs = ceil(max_iterations / floor(n_obs / batch_size))``.
        max_epochs
            Overrides ``max_iterations`` when given.
        batch_size
            Minibatch size (256; clipped to the number of cells); the last incomplete batch is dropped.
        lr, weight_decay
            Adam settings (2e-4, 5e-4; eps 1e-8, no scheduler, no KL warm-up).
        early_stopping
            Mode ``h`` only: stop when the training loss has not improved for ``early_stopping_patience``
            epochs and restore the best weights (kept last weights otherwise).
        early_stopping_patience
            Patience in epochs (30).
        early_stopping_monitor
            ``"epoch"``: the reference's rule, epoch-mean training loss, patience in epochs. ``"ema"``: an
            exponential moving average of the per-step losses (span = patience x steps per epoch), patience
            counted in steps (patience x max(steps per epoch, 10)). ``"auto"`` (default): ``"ema"`` when an
            epoch has fewer than 10 steps (e.g. one step per epoch on a few hundred cells, where the epoch loss is
            one noisy minibatch and the early rise of the OT term makes the epoch rule fire by chance), else
            ``"epoch"``. See :class:`~scvi_ext.uniport.LossEarlyStopper`. A deliberate difference from uniport 1.3
            on small data.
        save_ot
            Keep the global OT plan (warm-starts the minibatch solves, spec §6) for :meth:`get_ot_plan`,
            :meth:`transfer_labels` with ``method="ot"`` and :meth:`deconvolve`.
        sampler
            ``"random"`` (default, reference 1.3: ``batch_size`` rows drawn from all datasets together, so a
            small dataset may be missing from a batch) or ``"balanced"`` (``batch_size // S`` rows of every
            dataset in every batch, small datasets repeated; :class:`~scvi_ext.uniport.BalancedSourceSampler`).
        fast
            ``True`` (default): uniPort's own training loop (:func:`~scvi_ext.uniport.fast_train`; no Lightning,
            data resident as tensors, losses read once per epoch): the same module loss, optimiser, samplers,
            early stopping, global-plan updates and history as ``fast=False``, which trains through
            :class:`~scvi_ext.uniport.UniPortTrainingPlan` and a Lightning ``Trainer``.
        accelerator, devices
            Device settings (Lightning's names; one device).
        plan_kwargs
            Extra :class:`~scvi_ext.uniport.UniPortTrainingPlan` arguments (e.g. ``term_warmup``); the fast
            loop implements ``term_weights``, ``term_warmup`` and ``term_warmup_unit``.
        **trainer_kwargs
            ``fast=False``: passed to the scvi-tools ``Trainer`` (``enable_progress_bar``, ``callbacks``, ...).
            ``fast=True``: only ``enable_progress_bar`` / ``progress_bar``; anything else raises ``ValueError``.

        Returns
        -------
        None

        Examples
        --------
        >>> model.train(max_iterations=1500, save_ot=True)  # doctest: +SKIP
        """
        if sampler not in ("random", "balanced"):
            raise ValueError(f"sampler must be 'random' or 'balanced', got {sampler!r}.")
        if early_stopping_monitor not in ES_MONITORS:
            raise ValueError(
                f"early_stopping_monitor must be one of {list(ES_MONITORS)}, got {early_stopping_monitor!r}."
            )
        show_bar = check_fast_kwargs(plan_kwargs, trainer_kwargs) if fast else None
        n_obs = self.adata.n_obs
        bs = int(min(batch_size, n_obs))
        if max_epochs is None:
            max_epochs = max(1, math.ceil(int(max_iterations) / max(1, n_obs // bs)))
        codes = self._source_codes()
        store = None
        if save_ot:
            if self.mode == MODES.VERTICAL:
                raise ValueError("save_ot needs OT between datasets; mode 'v' has none.")
            n_r = int((codes == self.reference_idx).sum())
            sizes = {
                q: (int((codes == q).sum()), n_r) for q in range(len(self.sources)) if q != self.reference_idx
            }
            store = GlobalPlanStore(sizes)
        use_es = bool(early_stopping and self.mode == MODES.HORIZONTAL)
        if early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience must be >= 1, got {early_stopping_patience!r}.")
        # the rule early stopping uses (None: off); steps per epoch are n // batch_size with both samplers
        self.early_stopping_monitor_ = (
            resolve_monitor(early_stopping_monitor, max(1, n_obs // bs)) if use_es else None
        )
        if fast:
            self._train_fast(
                max_epochs=max_epochs,
                batch_size=bs,
                lr=lr,
                weight_decay=weight_decay,
                store=store,
                codes=codes,
                sampler=sampler,
                early_stopping=use_es,
                early_stopping_patience=early_stopping_patience,
                early_stopping_monitor=early_stopping_monitor,
                accelerator=accelerator,
                devices=devices,
                plan_kwargs=plan_kwargs,
                progress_bar=bool(show_bar),
            )
            return
        kwargs = {
            "lr": lr,
            "weight_decay": weight_decay,
            "eps": DEFAULTS.ADAM_EPS,
            "optimizer": "Custom",
            "optimizer_creator": partial(_adam, lr=lr, weight_decay=weight_decay, eps=DEFAULTS.ADAM_EPS),
            "reduce_lr_on_plateau": False,
            "n_epochs_kl_warmup": None,
            "n_steps_kl_warmup": None,
            "term_weights": {"ot": self.lambda_ot},
            "plan_store": store,
            "within_index": cumulative_within_index(codes),
        }
        kwargs.update(plan_kwargs or {})
        splitter: dict[str, Any] = {"drop_last": True}
        if sampler == "balanced":
            # positions = rows (no shuffled split); the sampler yields whole batches
            splitter.update(
                sampler=BalancedSourceSampler(codes, bs),
                collate_fn=unwrap_batch,
            )
        es = None
        if use_es:
            es = _RestoreBestEarlyStopping(early_stopping_patience, early_stopping_monitor)
            trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), es]
        super().train(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            train_size=1.0,
            batch_size=bs,
            early_stopping=False,
            datasplitter_kwargs=splitter,
            shuffle_set_split=sampler != "balanced",
            plan_kwargs=kwargs,
            **trainer_kwargs,
        )
        self._plan_store = store
        self.early_stopped_ = bool(es is not None and es.fired)

    def _train_fast(
        self,
        *,
        max_epochs: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        store: GlobalPlanStore | None,
        codes: np.ndarray,
        sampler: str,
        early_stopping: bool,
        early_stopping_patience: int,
        early_stopping_monitor: str,
        accelerator: str,
        devices,
        plan_kwargs: dict | None,
        progress_bar: bool,
    ) -> None:
        """The ``fast=True`` branch of :meth:`train` (arguments already checked)."""
        from scvi.model._utils import parse_device_args

        _, _, device = parse_device_args(
            accelerator, devices, return_device="torch", validate_single_device=True
        )
        self.module.to(device)
        manager = self.adata_manager
        resident = ResidentFields({k: manager.get_from_registry(k) for k in manager.data_registry}, device)
        optimizer = _adam(
            [p for p in self.module.parameters() if p.requires_grad],
            lr=lr,
            weight_decay=weight_decay,
            eps=DEFAULTS.ADAM_EPS,
        )
        pk = dict(plan_kwargs or {})
        history, fired = fast_train(
            self.module,
            resident,
            optimizer,
            max_epochs=max_epochs,
            batch_size=batch_size,
            term_weights=pk.get("term_weights", {"ot": self.lambda_ot}),
            term_warmup=pk.get("term_warmup"),
            term_warmup_unit=pk.get("term_warmup_unit", "epoch"),
            plan_store=store,
            within_index=cumulative_within_index(codes) if store is not None else None,
            balanced_sampler=BalancedSourceSampler(codes, batch_size) if sampler == "balanced" else None,
            early_stopping=early_stopping,
            early_stopping_patience=early_stopping_patience,
            early_stopping_monitor=early_stopping_monitor,
            progress_bar=progress_bar,
        )
        if self.is_trained_ and isinstance(self.history_, dict) and self.history_:
            for key, frame in history.items():
                prev = self.history_.get(key)
                if prev is None:
                    continue
                frame.index = pd.Index(np.arange(len(prev), len(prev) + len(frame)), name=prev.index.name)
                history[key] = pd.concat([prev, frame])
        self.history_ = history
        n = self.adata.n_obs
        self.train_indices = np.arange(n)
        self.validation_indices = np.array([], dtype=np.int64)
        self.test_indices = np.array([], dtype=np.int64)
        self.module.eval()
        self.is_trained_ = True
        self._plan_store = store
        self.early_stopped_ = bool(fired)

    # ------------------------------------------------------------------ save / load with the global plan
    def save(
        self,
        dir_path: str,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        save_ot_plan: bool = True,
        ot_plan_sparse: bool = False,
        ot_plan_threshold: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """scvi-tools ``save`` plus the global OT plan (``<prefix>ot_plan/``) when one was kept.

        Parameters
        ----------
        dir_path, prefix, overwrite, save_anndata
            As :meth:`scvi.model.base.BaseModelClass.save`.
        save_ot_plan
            Also write the global plan (if ``train(save_ot=True)`` kept one), block by block.
        ot_plan_sparse, ot_plan_threshold
            Store it as CSR keeping entries ``>= threshold * max`` (see :meth:`GlobalPlanStore.save`).
        **kwargs
            Passed to the scvi-tools ``save``.

        Examples
        --------
        >>> model.save("models/uniport", overwrite=True, ot_plan_sparse=True, ot_plan_threshold=1e-3)  # doctest: +SKIP
        """
        super().save(dir_path, prefix=prefix, overwrite=overwrite, save_anndata=save_anndata, **kwargs)
        plan_dir = os.path.join(dir_path, f"{prefix or ''}{DEFAULTS.PLAN_DIR}")
        if os.path.isdir(plan_dir):
            shutil.rmtree(plan_dir)  # scvi's save already refused an existing folder unless overwrite=True
        if save_ot_plan and self._plan_store is not None:
            self._plan_store.save(plan_dir, sparse=ot_plan_sparse, threshold=ot_plan_threshold)

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, prefix: str | None = None, **kwargs: Any):
        """scvi-tools ``load``; restores the global OT plan when the folder has one (read-only, memory-mapped).

        Parameters
        ----------
        dir_path, adata, prefix
            As :meth:`scvi.model.base.BaseModelClass.load`.
        **kwargs
            Passed to the scvi-tools ``load`` (``accelerator``, ...).

        Returns
        -------
        UniPort

        Examples
        --------
        >>> model = UniPort.load("models/uniport", adata=ad)  # doctest: +SKIP
        >>> props = model.deconvolve("cell_type")  # doctest: +SKIP
        """
        model = super().load(dir_path, adata=adata, prefix=prefix, **kwargs)
        plan_dir = os.path.join(dir_path, f"{prefix or ''}{DEFAULTS.PLAN_DIR}")
        if os.path.isdir(plan_dir):
            model._plan_store = GlobalPlanStore.load(plan_dir)
        return model

    # ------------------------------------------------------------------ helpers
    def _source_codes(self, adata: AnnData | None = None) -> np.ndarray:
        manager = self.get_anndata_manager(adata, required=True) if adata is not None else self.adata_manager
        return np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel().astype(int)

    def _check_bn_mode(self, bn_mode: str) -> None:
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {list(BN_MODES)}, got {bn_mode!r}.")

    def _source_index(self, source: str | int, argument: str) -> int:
        names = [str(s) for s in self.sources]
        if isinstance(source, int | np.integer) and not isinstance(source, bool) and 0 <= source < len(names):
            return int(source)
        if str(source) in names:
            return names.index(str(source))
        raise ValueError(
            f"{argument}={source!r} is not a dataset of this model ({self.sources}); uniPort has one "
            "decoder/BN per training dataset and cannot add a new one (use project() for new data)."
        )

    @torch.inference_mode()
    def _encode_loader(self, adata, indices, batch_size, bn_mode) -> np.ndarray:
        self._check_bn_mode(bn_mode)
        adata = self._validate_anndata(adata)
        codes = self._source_codes(adata)
        indices = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        out = np.zeros((len(indices), self.module.n_latent), dtype=np.float32)
        was_training = self.module.training
        self.module.eval()
        self.module.set_bn_mode(bn_mode)
        try:
            for s in np.unique(codes[indices]):  # single-source batches (spec §7)
                pos = np.flatnonzero(codes[indices] == s)
                dl = self._make_data_loader(
                    adata=adata, indices=indices[pos], batch_size=batch_size, shuffle=False
                )
                chunks = [
                    self.module.inference(**self.module._get_inference_input(t))["qz_m"].cpu() for t in dl
                ]
                out[pos] = torch.cat(chunks).numpy()
        finally:
            self.module.set_bn_mode(BN_MODES.RUNNING)
            self.module.train(was_training)
        return out

    # ------------------------------------------------------------------ outputs
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int = DEFAULTS.BATCH_SIZE,
        bn_mode: str = BN_MODES.BATCH,
        **kwargs: Any,
    ) -> np.ndarray:
        """Posterior means (cells x ``n_latent``), encoded in single-dataset batches (spec §7, A21).

        Parameters
        ----------
        adata
            Registered AnnData (default: the training one).
        indices
            Rows to encode.
        batch_size
            Inference batch size (256; with ``bn_mode="batch"`` it sets the BN statistics' batches).
        bn_mode
            ``"batch"``: BN with the statistics of each single-dataset batch, running stats untouched
            (reference behaviour); ``"running"``: eval-mode BN.
        **kwargs
            Ignored (scvi-tools compatibility).

        Returns
        -------
        numpy.ndarray
            ``(n_cells, n_latent)``.

        Examples
        --------
        >>> model.get_latent_representation().shape  # doctest: +SKIP
        """
        return self._encode_loader(adata, indices, batch_size, bn_mode)

    def get_ot_plan(self, query_source: str | int | None = None, as_df: bool = False):
        """Global OT plan (query cells x reference cells) kept by ``train(save_ot=True)`` (spec §6).

        Unnormalised (each written minibatch block has mass ~1; unvisited entries keep ``1/(n_q n_r)``).
        Large plans are disk-backed :class:`numpy.memmap` arrays; ``as_df=True`` loads it into a DataFrame.

        Parameters
        ----------
        query_source
            Query dataset (default: the only query).
        as_df
            Return a DataFrame indexed by obs names.

        Returns
        -------
        numpy.ndarray or pandas.DataFrame

        Examples
        --------
        >>> T = model.get_ot_plan()  # doctest: +SKIP
        """
        if self._plan_store is None:
            raise ValueError(
                "No global OT plan: train with save_ot=True first (or load a model saved with its plan)."
            )
        q = self._default_query(query_source)
        plan = self._plan_store.plans[q]
        if not as_df:
            return plan
        codes = self._source_codes()
        names = self.adata.obs_names
        return pd.DataFrame(
            np.asarray(plan), index=names[codes == q], columns=names[codes == self.reference_idx]
        )

    def _default_query(self, query_source) -> int:
        queries = [q for q in range(len(self.sources)) if q != self.reference_idx]
        if query_source is None:
            if len(queries) != 1:
                raise ValueError(
                    f"Several query datasets {[self.sources[q] for q in queries]}: pass query_source."
                )
            return queries[0]
        q = self._source_index(query_source, "query_source")
        if q == self.reference_idx:
            raise ValueError(f"query_source={query_source!r} is the reference dataset; pass a query dataset.")
        return q

    def transfer_labels(
        self,
        labels_key: str,
        query_source: str | int | None = None,
        method: str = "knn",
        k: int = 5,
        balance: bool = False,
        min_cut: float | None = None,
        bn_mode: str = BN_MODES.BATCH,
    ) -> pd.DataFrame:
        """Transfer reference labels to a query dataset through kNN in the latent or through the OT plan.

        Parameters
        ----------
        labels_key
            ``obs`` column of the training AnnData with the reference labels (query values are ignored).
        query_source
            Query dataset (default: the only one).
        method
            ``"knn"`` (k nearest reference cells in the latent, uniform vote) or ``"ot"`` (plan mass per
            label, spec §7.4; needs ``save_ot=True``).
        k
            Neighbours for ``"knn"``.
        balance, min_cut
            ``"ot"`` options (see :func:`~scvi_ext.uniport.plan_label_scores`).
        bn_mode
            BN mode of the latent (``"knn"``).

        Returns
        -------
        pandas.DataFrame
            Query cells x labels (proportions summing to 1) plus a ``"predicted"`` column (argmax).

        Examples
        --------
        >>> pred = model.transfer_labels("cell_type", method="ot")["predicted"]  # doctest: +SKIP
        """
        check_obs_key(self.adata, labels_key, "labels_key")
        q = self._default_query(query_source)
        codes = self._source_codes()
        labels = self.adata.obs[labels_key].astype(str).to_numpy()
        ref_rows, q_rows = codes == self.reference_idx, codes == q
        if method == "knn":
            z = self.get_latent_representation(bn_mode=bn_mode)
            probs = knn_transfer(z[ref_rows], labels[ref_rows], z[q_rows], k=k)
        elif method == "ot":
            probs = plan_label_scores(self.get_ot_plan(q), labels[ref_rows], balance=balance, min_cut=min_cut)
        else:
            raise ValueError(f"method must be 'knn' or 'ot', got {method!r}.")
        probs.index = self.adata.obs_names[q_rows]
        probs["predicted"] = probs.idxmax(axis=1)
        return probs

    def deconvolve(
        self,
        labels_key: str,
        spot_source: str | int | None = None,
        cell_source: str | int | None = None,
        balance: bool = True,
        min_cut: float | None = None,
    ) -> pd.DataFrame:
        """Cell-type proportions of every spot from the global OT plan (spec §7.5).

        Parameters
        ----------
        labels_key
            ``obs`` column with the single-cell labels (spot values ignored).
        spot_source
            Dataset holding the spots (default: the query when the reference holds the cells).
        cell_source
            Labelled single-cell dataset (default: the other one of the pair).
        balance, min_cut
            See :func:`~scvi_ext.uniport.plan_label_scores` (PDAC tutorial: ``balance=True``).

        Returns
        -------
        pandas.DataFrame
            Spots x cell types, rows summing to 1.

        Examples
        --------
        >>> props = model.deconvolve("cell_type", spot_source="spots")  # doctest: +SKIP
        """
        check_obs_key(self.adata, labels_key, "labels_key")
        codes = self._source_codes()
        if spot_source is None:
            spot = self._default_query(None)
        else:
            spot = self._source_index(spot_source, "spot_source")
        if spot == self.reference_idx:
            cell = self._default_query(cell_source)
            plan, spots_are_rows = self.get_ot_plan(cell), False
        else:
            if (
                cell_source is not None
                and self._source_index(cell_source, "cell_source") != self.reference_idx
            ):
                raise ValueError("With the spots as a query, the cells must be the reference dataset.")
            cell = self.reference_idx
            plan, spots_are_rows = self.get_ot_plan(spot), True
        labels = self.adata.obs[labels_key].astype(str).to_numpy()[codes == cell]
        props = deconvolve_plan(plan, labels, spots_are_rows=spots_are_rows, balance=balance, min_cut=min_cut)
        props.index = self.adata.obs_names[codes == spot]
        return props

    # ------------------------------------------------------------------ new data
    @classmethod
    def prepare_query_anndata(
        cls,
        adata: AnnData,
        reference_model: UniPort,
        layer: str | None = None,
        preprocess: bool = True,
        source_key: str = KEYS.SOURCE_OBS,
        source: str = "query",
    ) -> AnnData:
        """Query AnnData in the model's input layout: its common features in model order (zero-filled).

        With ``preprocess`` the raw counts are ``normalize_total``-ed, ``log1p``-ed and MaxAbs-scaled on the
        query itself (spec §7.2). The input is not modified.

        Parameters
        ----------
        adata
            Query cells (raw counts unless ``preprocess=False``).
        reference_model
            Trained model.
        layer
            Counts layer (``None``: X).
        preprocess
            See above.
        source_key, source
            ``obs`` column set on the result (kept from ``adata`` when present there).

        Returns
        -------
        anndata.AnnData

        Examples
        --------
        >>> q = UniPort.prepare_query_anndata(new_rna, model)  # doctest: +SKIP
        """
        import scanpy as sc

        genes = list(reference_model.adata.var_names)
        have = set(adata.var_names)
        present = [g for g in genes if g in have]
        if not present:
            raise ValueError(
                f"The query shares none of the model's {len(genes)} input features (e.g. {genes[:5]})."
            )
        X = get_matrix(adata, layer)
        check_finite(X, "query")
        q = AnnData(
            sp.csr_matrix(X, dtype=np.float32), obs=adata.obs.copy(), var=pd.DataFrame(index=adata.var_names)
        )
        if preprocess:
            sc.pp.normalize_total(q)
            sc.pp.log1p(q)
        Xd = np.zeros((q.n_obs, len(genes)), dtype=np.float32)
        pos = {g: i for i, g in enumerate(q.var_names)}
        cols = [genes.index(g) for g in present]
        sub = q[:, [pos[g] for g in present]].X
        Xd[:, cols] = sub.toarray() if sp.issparse(sub) else sub
        if preprocess:
            m = Xd.max(0)
            Xd = Xd / np.where(m > 0, m, 1.0)
        out = AnnData(Xd, obs=q.obs, var=pd.DataFrame(index=genes))
        if source_key not in out.obs:
            out.obs[source_key] = source
        if len(present) < len(genes):
            logger.warning(
                "Query lacks %d of %d model features; zero-filled.", len(genes) - len(present), len(genes)
            )
        return out

    @torch.inference_mode()
    def project(
        self,
        adata: AnnData,
        input_source: str | int | None = None,
        batch_size: int = DEFAULTS.BATCH_SIZE,
        bn_mode: str = BN_MODES.BATCH,
    ) -> np.ndarray:
        """Online mapping of a new dataset through the trained encoder (no training, spec §7.2).

        Parameters
        ----------
        adata
            Output of :meth:`prepare_query_anndata` (X = the model's input features, in order).
        input_source
            Mode ``d``: whose encoder to use (default the first dataset); ignored otherwise.
        batch_size, bn_mode
            As in :meth:`get_latent_representation` (the query forms its own batches).

        Returns
        -------
        numpy.ndarray
            ``(n_query, n_latent)`` posterior means.

        Examples
        --------
        >>> z_new = model.project(UniPort.prepare_query_anndata(new_rna, model))  # doctest: +SKIP
        """
        self._check_bn_mode(bn_mode)
        genes = list(self.adata.var_names)
        if list(adata.var_names) != genes:
            raise ValueError(
                "The query's features differ from the model's; call UniPort.prepare_query_anndata(query, model)."
            )
        X = get_matrix(adata, None)
        check_finite(X, "query X")
        X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)
        s = 0 if input_source is None else self._source_index(input_source, "input_source")
        device = next(self.module.parameters()).device
        was_training = self.module.training
        self.module.eval()
        self.module.set_bn_mode(bn_mode)
        try:
            out = []
            for start in range(0, X.shape[0], batch_size):
                x = torch.from_numpy(X[start : start + batch_size]).to(device)
                src = torch.full((x.shape[0],), s, dtype=torch.long, device=device)
                out.append(self.module.encode(x, src)[0].cpu())
        finally:
            self.module.set_bn_mode(BN_MODES.RUNNING)
            self.module.train(was_training)
        return torch.cat(out).numpy()

    @torch.inference_mode()
    def predict(
        self,
        target_source: str | int,
        adata: AnnData | None = None,
        latent: np.ndarray | None = None,
        via: str = "specific",
        batch_size: int = DEFAULTS.BATCH_SIZE,
        bn_mode: str = BN_MODES.BATCH,
    ) -> np.ndarray:
        """Decode cells into another dataset's features (spec §7.3), in that dataset's scaled space.

        Parameters
        ----------
        target_source
            Dataset whose decoder to use (name or code).
        adata
            Registered AnnData (default: training data); ignored when ``latent`` is given.
        latent
            Posterior means to decode (e.g. from :meth:`project`).
        via
            ``"specific"``: the dataset's own decoder (its specific features; mode ``v``: its modality);
            ``"common"``: the common decoder with that dataset's BN (mode ``h``).
        batch_size, bn_mode
            As in :meth:`get_latent_representation`.

        Returns
        -------
        numpy.ndarray
            ``(n_cells, n_features of the target)``.

        Examples
        --------
        >>> rna_from_atac = model.predict("rna", latent=model.project(q))  # doctest: +SKIP
        """
        if via not in ("specific", "common"):
            raise ValueError(f"via must be 'specific' or 'common', got {via!r}.")
        if self.mode == MODES.VERTICAL:
            modalities = self.adata.uns.get(KEYS.UNS, {}).get(
                "modalities", list(range(len(self.module.decoders)))
            )
            names = [str(m) for m in modalities]
            if str(target_source) in names:
                k = names.index(str(target_source))
            elif isinstance(target_source, int) and 0 <= target_source < len(self.module.decoders):
                k = target_source
            else:
                raise ValueError(f"target_source={target_source!r} is not a modality ({modalities}).")
        else:
            k = self._source_index(target_source, "target_source")
            if via == "common" and self.mode != MODES.HORIZONTAL:
                raise ValueError("via='common' exists only in mode 'h'.")
            if via == "specific" and self.mode == MODES.HORIZONTAL and self.module.specific_widths[k] == 0:
                raise ValueError(f"Dataset {self.sources[k]!r} has no specific features; use via='common'.")
        z = (
            self.get_latent_representation(adata, batch_size=batch_size, bn_mode=bn_mode)
            if latent is None
            else latent
        )
        device = next(self.module.parameters()).device
        was_training = self.module.training
        self.module.eval()
        self.module.set_bn_mode(bn_mode)
        try:
            out = []
            for start in range(0, len(z), batch_size):
                zt = torch.as_tensor(
                    np.asarray(z[start : start + batch_size]), dtype=torch.float32, device=device
                )
                out.append(self.module.decode(zt, k, via=via).cpu())
        finally:
            self.module.set_bn_mode(BN_MODES.RUNNING)
            self.module.train(was_training)
        res = torch.cat(out).numpy()
        if via == "specific" and self.mode != MODES.VERTICAL:
            res = res[:, : self.module.specific_widths[k]]
        return res

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: UniPort,
    ) -> UniPort:
        """A model on new cells of the reference's datasets, with the reference's weights (to fine-tune).

        uniPort has one BN per training dataset, so every query cell must belong to a known dataset; new
        datasets are mapped with :meth:`project` instead. Adds ``obs['_indices']`` to ``adata``.

        Parameters
        ----------
        adata
            Cells in the reference's input layout (e.g. from :meth:`prepare_query_anndata` with
            ``source=`` a known dataset), with the reference's source column.
        reference_model
            Trained model.

        Returns
        -------
        UniPort
            New model (same init parameters and weights); ``.train(...)`` fine-tunes it.

        Raises
        ------
        ValueError
            A dataset id unknown to the reference, or different features.

        Examples
        --------
        >>> q = UniPort.load_query_data(more_rna, model)  # doctest: +SKIP
        >>> q.train(max_epochs=5)  # doctest: +SKIP
        """
        setup = reference_model.adata_manager.registry["setup_args"]
        source_key = setup["source_key"]
        if list(adata.var_names) != list(reference_model.adata.var_names):
            raise ValueError(
                "The query's features differ from the model's; use UniPort.prepare_query_anndata."
            )
        if source_key is not None:
            check_obs_key(adata, source_key, "source_key")
            new = sorted(
                set(adata.obs[source_key].astype(str)) - {str(s) for s in reference_model.sources}, key=str
            )
            if new:
                raise ValueError(
                    f"Query dataset id(s) {new} in obs[{source_key!r}] are not datasets of the reference model "
                    f"({reference_model.sources}); uniPort cannot add a dataset (it has one BN/decoder per "
                    "dataset): map new datasets with model.project()."
                )
        if KEYS.INDICES_OBS not in adata.obs or len(adata.obs[KEYS.INDICES_OBS]) != adata.n_obs:
            adata.obs[KEYS.INDICES_OBS] = np.arange(adata.n_obs)
        adata.obs[KEYS.INDICES_OBS] = np.arange(adata.n_obs)
        manager = reference_model.adata_manager.transfer_fields(adata, extend_categories=False)
        cls.register_manager(manager)
        init = reference_model.init_params_
        kwargs = {k: v for k, v in init.get("non_kwargs", {}).items()}
        kwargs.update(init.get("kwargs", {}))
        model = cls(adata, **kwargs)
        model.module.load_state_dict(reference_model.module.state_dict())
        return model
