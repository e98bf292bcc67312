"""scCRAFT as a scvi-tools model (sccraft.md §8-§9)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin
from scvi.train import TrainRunner
from scvi.utils import setup_anndata_dsp

from scvi_ext.train import AdversarialTrainingPlan
from scvi_ext.train._constants import TERM_NAMES

from .._validation import (
    check_finite,
    check_n_categories,
    check_nonempty,
    check_obs_key,
    check_query_features,
    get_matrix,
    looks_like_counts,
)
from ._constants import DEFAULTS, OBS_KEYS, ORIGINS, REGISTRY_KEYS_SCCRAFT
from ._module import SCCRAFTModule
from ._sampler import BalancedBatchDataModule

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)


class SCCRAFTTrainingPlan(AdversarialTrainingPlan):
    """scCRAFT's plan: the suite's adversarial plan (10 discriminator steps on the detached latent, then
    a generator step maximising the discriminator's cross-entropy after a hard warm-up) with the
    ``"triplet"`` term weight passed to the module (sccraft.md §8).

    Defaults are the reference's: Adam lr 1e-3, eps 1e-8, no weight decay for both optimisers,
    constant KL weight 0.005, ``d_coef`` 0.2 after 50 warm-up epochs, triplet weight 1.

    Parameters
    ----------
    module
        A :class:`~scvi_ext.sccraft.SCCRAFTModule`.
    **kwargs
        :class:`scvi_ext.train.AdversarialTrainingPlan` arguments, overriding the defaults above, and
        constant loss kwargs of :meth:`SCCRAFTModule.loss` (``cos_weight``, ``margin``, ...).

    Examples
    --------
    >>> plan = SCCRAFTTrainingPlan(model.module, n_epochs_adversarial_warmup=16)  # doctest: +SKIP
    """

    _default_term_weights: ClassVar[dict[str, float]] = {TERM_NAMES.TRIPLET: DEFAULTS.TRIPLET_COEF}

    def __init__(self, module: SCCRAFTModule, **kwargs: Any):
        defaults = {
            "adversarial_weight": DEFAULTS.D_COEF,
            "n_epochs_adversarial_warmup": DEFAULTS.WARMUP_EPOCHS,
            "n_discriminator_steps": DEFAULTS.D_STEPS,
            "adversarial_loss": "neg_ce",
            "lr": DEFAULTS.LR,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "n_epochs_kl_warmup": None,
            "n_steps_kl_warmup": None,
            "max_kl_weight": DEFAULTS.KL_COEF,
        }
        super().__init__(module, **{**defaults, **kwargs})


def _default_epochs(n_obs: int, n_batch: int) -> int:
    """150, or about 1.5 passes over the data when there are more than 100k cells (sccraft.md §7)."""
    epochs = DEFAULTS.MAX_EPOCHS
    if n_obs > DEFAULTS.LARGE_N_OBS:
        epochs = max(epochs, int(1.5 * n_obs / (n_batch * DEFAULTS.CELLS_PER_BATCH)))
    return epochs


class SCCRAFT(UnsupervisedTrainingMixin, BaseModelClass):
    """scCRAFT: adversarial multi-domain adaptation with a dual-resolution triplet loss.

    A VAE whose encoder sees expression only and whose decoder is batch-conditioned
    (``ReLU(G1(z, v) + G2(v))`` -> NB mean and inverse dispersion), trained on the log-normalised HVG
    matrix with an NB + cosine reconstruction, a K-way batch discriminator on the latent (10 updates on the
    detached latent per generator step; the encoder maximises its cross-entropy after a warm-up), and a
    within-batch triplet loss whose positives share a low- and a high-resolution cluster of the
    unintegrated data (computed once by :func:`~scvi_ext.sccraft.multi_resolution_cluster`).
    Minibatches are batch-balanced; one epoch draws 512 cells per batch (sccraft.md §7).

    He, C., Filippidis, P., Kleinstein, S. H., Guan, L. "Unsupervised integration of single-cell
    transcriptomic data with scCRAFT." *Communications Biology* 8 (2025). doi:10.1038/s42003-025-07988-y

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_latent
        Latent size (256).
    n_hidden_encoder
        Encoder widths (1024, 512).
    n_hidden_decoder
        Widths of both decoder paths (512, 1024).
    n_hidden_discriminator, n_layers_discriminator
        Discriminator MLP (128 wide, 2 hidden layers).
    var_eps
        Encoder variance floor (1e-4).

    Examples
    --------
    >>> from scvi_ext.sccraft import SCCRAFT, multi_resolution_cluster
    >>> multi_resolution_cluster(adata)  # doctest: +SKIP
    >>> SCCRAFT.setup_anndata(adata, batch_key="batch")  # doctest: +SKIP
    >>> model = SCCRAFT(adata)  # doctest: +SKIP
    >>> model.train(max_epochs=150)  # doctest: +SKIP
    >>> adata.obsm["X_sccraft"] = model.get_latent_representation()  # doctest: +SKIP
    """

    _module_cls = SCCRAFTModule
    _training_plan_cls = SCCRAFTTrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        n_latent: int = DEFAULTS.N_LATENT,
        n_hidden_encoder: Sequence[int] = (1024, 512),
        n_hidden_decoder: Sequence[int] = (512, 1024),
        n_hidden_discriminator: int = 128,
        n_layers_discriminator: int = 2,
        var_eps: float = DEFAULTS.VAR_EPS,
    ):
        super().__init__(adata)
        n_batch = self.summary_stats.n_batch
        if n_batch < 2:
            raise ValueError(f"SCCRAFT needs at least 2 batches in the registered batch_key; got {n_batch}.")
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_batch=n_batch,
            n_latent=int(n_latent),
            n_hidden_encoder=tuple(int(h) for h in n_hidden_encoder),
            n_hidden_decoder=tuple(int(h) for h in n_hidden_decoder),
            n_hidden_discriminator=int(n_hidden_discriminator),
            n_layers_discriminator=int(n_layers_discriminator),
            var_eps=float(var_eps),
        )
        self._model_summary_string = (
            f"SCCRAFT model: n_latent {n_latent}, n_batch {n_batch}, n_genes {self.summary_stats.n_vars}"
        )
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ data
    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        batch_key: str,
        layer: str | None = None,
        low_res_key: str = OBS_KEYS.LOW,
        high_res_key: str = OBS_KEYS.HIGH,
        **kwargs: Any,
    ) -> None:
        """Register the log-normalised expression, the batches and the two cluster columns.

        Parameters
        ----------
        adata
            Log-normalised (log1p CP10k) HVG expression in ``X`` or ``layers[layer]``.
        batch_key
            ``obs`` column with the batches (at least two).
        layer
            Layer to use instead of ``X``.
        low_res_key, high_res_key
            ``obs`` columns with the low- and high-resolution clusters (from
            :func:`~scvi_ext.sccraft.multi_resolution_cluster`, or trusted labels).
        **kwargs
            scvi-tools registration arguments (used by ``load``).

        Examples
        --------
        >>> SCCRAFT.setup_anndata(adata, batch_key="batch", low_res_key="leiden1")  # doctest: +SKIP
        """
        check_nonempty(adata)
        X = get_matrix(adata, layer)
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        check_finite(X, where)
        if looks_like_counts(X) and (X.max() if not sp.issparse(X) else X.data.max(initial=0)) > 50:
            warnings.warn(
                f"{where} looks like raw counts; SCCRAFT expects log1p of counts normalised to 1e4 per cell "
                "(sc.pp.normalize_total(target_sum=1e4); sc.pp.log1p).",
                UserWarning,
                stacklevel=2,
            )
        check_obs_key(adata, batch_key, "batch_key")
        if "source_registry" not in kwargs:
            check_n_categories(adata, batch_key, minimum=2, argument="batch_key")
        for key, argument in ((low_res_key, "low_res_key"), (high_res_key, "high_res_key")):
            if key not in adata.obs:
                raise KeyError(
                    f"{argument}={key!r} is not an adata.obs column; compute the pseudo-labels first with "
                    "scvi_ext.sccraft.multi_resolution_cluster(adata) (or pass trusted labels)."
                )
            if adata.obs[key].isna().any():
                raise ValueError(
                    f"adata.obs[{key!r}] ({argument}) has {int(adata.obs[key].isna().sum())} missing labels; "
                    "every cell needs a cluster."
                )
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS_SCCRAFT.LOW_KEY, low_res_key),
            CategoricalObsField(REGISTRY_KEYS_SCCRAFT.HIGH_KEY, high_res_key),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        warmup_epochs: int | None = None,
        cells_per_batch: int = DEFAULTS.CELLS_PER_BATCH,
        batch_size: int = DEFAULTS.BATCH_SIZE,
        lr: float = DEFAULTS.LR,
        d_steps: int = DEFAULTS.D_STEPS,
        d_coef: float = DEFAULTS.D_COEF,
        kl_coef: float = DEFAULTS.KL_COEF,
        cos_coef: float = DEFAULTS.COS_COEF,
        triplet_coef: float = DEFAULTS.TRIPLET_COEF,
        margin: float = DEFAULTS.MARGIN,
        n_triplets_per_cluster: int = DEFAULTS.N_TRIPLETS_PER_CLUSTER,
        squared_triplet: bool = False,
        negative_sampling: Literal["cell", "cluster"] = "cell",
        adversarial_loss: Literal["neg_ce", "uniform", "flipped"] = "neg_ce",
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        seed: int | None = DEFAULTS.SEED,
        progress_bar: bool = True,
        plan_kwargs: dict | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Train with balanced minibatches, discriminator steps and the triplet term (sccraft.md §8).

        Parameters
        ----------
        max_epochs
            Epochs of ``K * cells_per_batch`` draws; ``None``: 150, or about 1.5 passes over the data
            above 100k cells (§7).
        warmup_epochs
            Epochs without the adversarial term (the discriminator still trains); ``None``: 50, or
            ``max_epochs // 3`` when ``max_epochs < 150`` (the reference README's advice).
        cells_per_batch
            Draws per batch per epoch (512); a batch with fewer cells is drawn with replacement.
        batch_size
            Minibatch size (1024).
        lr
            Adam learning rate of both optimisers.
        d_steps
            Discriminator updates per generator step (10).
        d_coef
            Adversarial weight after the warm-up (0.2).
        kl_coef
            KL weight (0.005, constant).
        cos_coef
            Cosine reconstruction weight (20).
        triplet_coef
            Triplet weight (1; ``0`` disables the term).
        margin
            Triplet margin (5).
        n_triplets_per_cluster
            Pairs drawn per (batch, low cluster) group per step (15).
        squared_triplet
            Squared distances (paper) instead of plain ones (reference).
        negative_sampling
            ``"cell"`` (reference) or ``"cluster"`` (paper text).
        adversarial_loss
            Generator objective: ``"neg_ce"`` (reference), ``"uniform"`` or ``"flipped"`` (scvi-style).
        accelerator, devices
            Lightning device settings.
        seed
            Seeds torch (latent noise, triplet draws) and the balanced sampler (``seed + epoch``);
            ``None`` leaves the global RNG alone and uses 0 for the sampler.
        progress_bar
            Show Lightning's progress bar.
        plan_kwargs
            Extra :class:`SCCRAFTTrainingPlan` arguments (override the ones above).
        **trainer_kwargs
            Passed to the Lightning trainer.

        Examples
        --------
        >>> model.train(max_epochs=50, warmup_epochs=16)  # doctest: +SKIP
        """
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).reshape(-1)
        counts = np.bincount(codes.astype(np.int64), minlength=self.summary_stats.n_batch)
        batch_names = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
        small = [str(batch_names[i]) for i, c in enumerate(counts) if 0 < c < DEFAULTS.MIN_CELLS_PER_BATCH]
        if small:
            raise ValueError(
                f"Batches {small} have fewer than {DEFAULTS.MIN_CELLS_PER_BATCH} cells; each batch needs at least "
                "2 cells (batch-norm statistics and positive pairs). Remove or merge them."
            )
        if int(batch_size) < 2:
            raise ValueError(f"batch_size must be >= 2 (batch normalisation), got {batch_size}.")
        if int(cells_per_batch) < 1:
            raise ValueError(f"cells_per_batch must be >= 1, got {cells_per_batch}.")
        if max_epochs is None:
            max_epochs = _default_epochs(self.adata.n_obs, self.summary_stats.n_batch)
        if int(max_epochs) < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
        if warmup_epochs is None:
            warmup_epochs = (
                DEFAULTS.WARMUP_EPOCHS if max_epochs >= DEFAULTS.MAX_EPOCHS else int(max_epochs) // 3
            )
        if int(warmup_epochs) < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        if seed is not None:
            torch.manual_seed(int(seed))
        plan_args = {
            "adversarial_weight": d_coef,
            "n_epochs_adversarial_warmup": int(warmup_epochs),
            "n_discriminator_steps": int(d_steps),
            "adversarial_loss": adversarial_loss,
            "lr": lr,
            "max_kl_weight": kl_coef,
            "term_weights": {TERM_NAMES.TRIPLET: float(triplet_coef)},
            "cos_weight": float(cos_coef),
            "margin": float(margin),
            "n_triplets_per_cluster": int(n_triplets_per_cluster),
            "squared_triplet": bool(squared_triplet),
            "negative_sampling": negative_sampling,
        }
        plan_args.update(plan_kwargs or {})
        training_plan = self._training_plan_cls(self.module, **plan_args)
        data_module = BalancedBatchDataModule(
            self.adata_manager,
            cells_per_batch=int(cells_per_batch),
            batch_size=int(batch_size),
            seed=0 if seed is None else int(seed),
        )
        trainer_kwargs.setdefault("enable_progress_bar", progress_bar)
        trainer_kwargs.setdefault("log_every_n_steps", 1)
        trainer_kwargs.setdefault("num_sanity_val_steps", 0)
        runner = TrainRunner(
            self,
            training_plan=training_plan,
            data_splitter=data_module,
            max_epochs=int(max_epochs),
            accelerator=accelerator,
            devices=devices,
            **trainer_kwargs,
        )
        return runner()

    # ------------------------------------------------------------------ outputs
    def _matrix_for(self, adata: AnnData | None) -> Any:
        """Expression matrix of ``adata`` (default: the registered one) in the reference's gene order."""
        layer = self.adata_manager.registry["setup_args"].get("layer")
        if adata is None:
            return get_matrix(self.adata, layer)
        ref_genes = pd.Index(self.adata.var_names) if self.adata is not None else pd.Index(self._var_names())
        check_query_features(list(ref_genes), list(adata.var_names))
        X = get_matrix(adata, layer)
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        check_finite(X, where)
        if not pd.Index(adata.var_names).equals(ref_genes):
            X = X[:, pd.Index(adata.var_names).get_indexer(ref_genes)]
        return X

    def _var_names(self) -> list[str]:
        return list(self.adata_manager.registry.get("var_names", []))

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        batch_size: int = DEFAULTS.ENCODE_BATCH_SIZE,
        n_pcs: int | None = None,
        seed: int | None = None,
    ) -> np.ndarray:
        """Encode cells (encoder in eval mode: batch norm uses its running statistics).

        The encoder has no batch input, so any AnnData with the reference genes (same normalisation) can be
        encoded directly — this is how query data are mapped (no registration of the query needed).

        Parameters
        ----------
        adata
            AnnData to encode (default: the registered one); needs every gene of the model (any order).
        indices
            Rows to encode.
        give_mean
            Posterior mean (default, deterministic) or one sample (the reference's output).
        batch_size
            Cells per forward pass.
        n_pcs
            Reduce the latent by PCA to this many components (the reference's ``obtain_embeddings`` uses 50).
        seed
            Seed of the sample when ``give_mean=False``.

        Returns
        -------
        numpy.ndarray
            Cells x ``n_latent`` (or ``n_pcs``).

        Examples
        --------
        >>> z = model.get_latent_representation()  # doctest: +SKIP
        >>> z_ref = model.get_latent_representation(give_mean=False, n_pcs=50, seed=0)  # doctest: +SKIP
        """
        self._check_if_trained(warn=True)
        X = self._matrix_for(adata)
        if indices is not None:
            X = X[np.asarray(indices)]
        generator = None
        device = self.module.device
        if not give_mean and seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(int(seed))
        encoder = self.module.encoder
        was_training = encoder.training
        encoder.eval()
        out = []
        try:
            for start in range(0, X.shape[0], int(batch_size)):
                chunk = X[start : start + int(batch_size)]
                chunk = chunk.toarray() if sp.issparse(chunk) else np.asarray(chunk)
                x = torch.as_tensor(chunk, dtype=torch.float32, device=device)
                h = encoder.trunk(x)
                qz_m = encoder.mean(h)
                if give_mean:
                    out.append(qz_m.cpu())
                else:
                    qz_v = torch.exp(encoder.log_var(h)) + encoder.var_eps
                    eps = torch.randn(qz_m.shape, generator=generator).to(device)
                    out.append((qz_m + qz_v.sqrt() * eps).cpu())
        finally:
            encoder.train(was_training)
        latent = torch.cat(out).numpy().astype(np.float32)
        if n_pcs is not None:
            from sklearn.decomposition import PCA

            n_comp = int(n_pcs)
            if not 1 <= n_comp <= min(latent.shape):
                raise ValueError(f"n_pcs must be in [1, {min(latent.shape)}], got {n_pcs}.")
            latent = PCA(n_components=n_comp).fit_transform(latent).astype(np.float32)
        return latent

    # ------------------------------------------------------------------ query
    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: SCCRAFT,
        freeze_encoder: bool = False,
        reference_adata: AnnData | None = None,
        reference_cells_per_batch: int | None = None,
        seed: int = 0,
    ) -> SCCRAFT:
        """Extend a trained reference to new query batches for optional fine-tuning (sccraft.md §9.5 item 2).

        The query is registered with the reference's setup (batch categories extended, genes must be those
        of the reference in the same order — use ``SCCRAFT.prepare_query_anndata`` equivalents upstream), a
        model with ``K + K_new`` batches is built, every reference weight is copied, the new batch columns of
        the decoder's first layers and the new output rows of the discriminator are freshly initialised.
        Train it with ``model.train(max_epochs=...)``. The query needs its own cluster columns
        (:func:`~scvi_ext.sccraft.multi_resolution_cluster` on the query). Zero-shot mapping needs none of
        this: ``reference_model.get_latent_representation(query)``.

        With ``reference_adata`` the fine-tuning set is the query **mixed with reference cells** (§9.5): the
        model is built on a new AnnData holding (a per-batch subsample of) the reference cells, with their
        batches and cluster labels, followed by the query cells, and ``obs['sccraft_origin']`` saying which is
        which. The balanced sampler then draws ``cells_per_batch`` cells from every reference batch as well as
        from every query batch, so each minibatch keeps the reference's batches in play for the
        discriminator and the triplet term while the (unfrozen) encoder adapts to the query — this limits the
        drift of the reference embedding. The query's cluster labels are prefixed with ``"query:"`` in that
        AnnData (triplets stay within a batch and the query was clustered on its own, so its cluster ``"3"``
        is not the reference's ``"3"``). Neither ``adata`` nor ``reference_adata`` is modified; embed the
        query afterwards with ``model.get_latent_representation(query)``.

        Parameters
        ----------
        adata
            Query AnnData (same genes and order as the reference; batch and cluster columns of the reference).
        reference_model
            Trained :class:`SCCRAFT`.
        freeze_encoder
            Keep the encoder fixed (then fine-tuning only adapts the decoder and the embedding does not move).
        reference_adata
            Reference cells to mix into the fine-tuning minibatches (usually ``reference_model.adata``): the
            reference's genes in the same order, its batch and cluster columns, batches known to the
            reference model. ``None``: fine-tune on the query alone.
        reference_cells_per_batch
            Keep at most this many randomly chosen cells of each reference batch (a stored subsample is
            enough: the sampler draws ``cells_per_batch`` per batch per epoch, with replacement when fewer).
            ``None``: all of ``reference_adata``.
        seed
            Seed of that subsample.

        Returns
        -------
        SCCRAFT
            New model on ``adata``.

        Examples
        --------
        >>> q = SCCRAFT.load_query_data(query, ref_model)  # doctest: +SKIP
        >>> q.train(max_epochs=10, warmup_epochs=0)  # doctest: +SKIP
        >>> mixed = SCCRAFT.load_query_data(
        ...     query, ref_model, reference_adata=ref_model.adata, reference_cells_per_batch=512
        ... )  # doctest: +SKIP
        >>> mixed.train(max_epochs=10, warmup_epochs=0)  # doctest: +SKIP
        >>> z_query = mixed.get_latent_representation(query)  # doctest: +SKIP
        """
        if not isinstance(reference_model, SCCRAFT):
            raise TypeError(
                f"reference_model must be a trained SCCRAFT model, got {type(reference_model).__name__}."
            )
        ref_genes = list(reference_model.adata.var_names)
        check_query_features(ref_genes, list(adata.var_names))
        if list(adata.var_names) != ref_genes:
            raise ValueError(
                "The query's genes must be the reference's genes in the same order; subset/reorder it first "
                "(query = query[:, reference_model.adata.var_names].copy())."
            )
        registry = reference_model.adata_manager.registry
        setup_args = dict(registry["setup_args"])
        if reference_adata is not None:
            adata = _mix_reference_cells(
                adata, reference_adata, reference_model, setup_args, reference_cells_per_batch, seed
            )
        elif reference_cells_per_batch is not None:
            raise ValueError("reference_cells_per_batch needs reference_adata (the cells to subsample).")
        cls.setup_anndata(adata, source_registry=registry, extend_categories=True, **setup_args)
        model = cls(
            adata, **reference_model.init_params_["non_kwargs"], **reference_model.init_params_["kwargs"]
        )
        ref_state = reference_model.module.state_dict()
        new_state = model.module.state_dict()
        for key, new in new_state.items():
            old = ref_state[key]
            if old.shape == new.shape:
                new_state[key] = old.clone()
            elif old.dim() == new.dim() and all(o <= n for o, n in zip(old.shape, new.shape, strict=True)):
                merged = new.clone()
                merged[tuple(slice(0, o) for o in old.shape)] = old
                new_state[key] = merged
            else:  # pragma: no cover - shapes only grow with new batches
                raise ValueError(
                    f"Cannot transfer {key}: reference {tuple(old.shape)} vs query {tuple(new.shape)}."
                )
        model.module.load_state_dict(new_state)
        if freeze_encoder:
            for p in model.module.encoder.parameters():
                p.requires_grad_(False)
        model.module.to(reference_model.module.device)
        return model


def _mix_reference_cells(
    query: AnnData,
    reference: AnnData,
    reference_model: SCCRAFT,
    setup_args: dict,
    cells_per_batch: int | None,
    seed: int,
) -> AnnData:
    """Reference cells (per-batch subsample) followed by the query cells, for mixed fine-tuning (§9.5)."""
    import anndata

    batch_key = setup_args["batch_key"]
    low_key = setup_args.get("low_res_key", OBS_KEYS.LOW)
    high_key = setup_args.get("high_res_key", OBS_KEYS.HIGH)
    layer = setup_args.get("layer")
    if not hasattr(reference, "obs") or not hasattr(reference, "var_names"):
        raise TypeError(f"reference_adata must be an AnnData, got {type(reference).__name__}.")
    check_nonempty(reference)
    ref_genes = list(reference_model.adata.var_names)
    check_query_features(ref_genes, list(reference.var_names))
    if list(reference.var_names) != ref_genes:
        raise ValueError(
            "reference_adata's genes must be the reference model's genes in the same order "
            "(reference_adata = reference_adata[:, reference_model.adata.var_names].copy())."
        )
    for key, argument in ((batch_key, "batch_key"), (low_key, "low_res_key"), (high_key, "high_res_key")):
        for name, a in (("reference_adata", reference), ("adata", query)):
            if key not in a.obs:
                raise KeyError(
                    f"{name}.obs lacks {key!r}, the {argument} the reference model was set up with; "
                    "every cell needs its batch and both cluster labels."
                )
            if a.obs[key].isna().any():
                raise ValueError(f"{name}.obs[{key!r}] ({argument}) has missing values.")
    known = reference_model.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
    known = {str(b) for b in known}
    ref_batches = reference.obs[batch_key].astype(str).to_numpy()
    unknown = sorted(set(ref_batches) - known)
    if unknown:
        raise ValueError(
            f"reference_adata.obs[{batch_key!r}] has batches {unknown} the reference model was not trained "
            "on; pass the reference's own cells."
        )
    rows = np.arange(reference.n_obs)
    if cells_per_batch is not None:
        if int(cells_per_batch) < DEFAULTS.MIN_CELLS_PER_BATCH:
            raise ValueError(
                f"reference_cells_per_batch must be >= {DEFAULTS.MIN_CELLS_PER_BATCH} or None, "
                f"got {cells_per_batch}."
            )
        rng = np.random.default_rng(int(seed))
        keep = []
        for b in pd.unique(ref_batches):
            idx = rows[ref_batches == b]
            if idx.size > int(cells_per_batch):
                idx = np.sort(rng.choice(idx, size=int(cells_per_batch), replace=False))
            keep.append(idx)
        rows = np.sort(np.concatenate(keep))

    def _slim(a: AnnData, index: np.ndarray | None, origin: str, prefix: str) -> AnnData:
        sub = a if index is None else a[index]
        X = get_matrix(sub, layer)
        X = X.copy() if sp.issparse(X) else np.array(X, dtype=np.float32)
        obs = pd.DataFrame(
            {
                batch_key: sub.obs[batch_key].astype(object).to_numpy(),  # keep the registry's values
                low_key: [prefix + str(c) for c in sub.obs[low_key].to_numpy()],
                high_key: [prefix + str(c) for c in sub.obs[high_key].to_numpy()],
                OBS_KEYS.ORIGIN: origin,
            },
            index=sub.obs_names.astype(str),
        )
        out = anndata.AnnData(X=X, obs=obs, var=pd.DataFrame(index=sub.var_names.astype(str)))
        if layer is not None:
            out.layers[layer] = out.X
        return out

    mixed = anndata.concat(
        [
            _slim(reference, rows, ORIGINS.REFERENCE, ""),
            _slim(query, None, ORIGINS.QUERY, ORIGINS.QUERY_CLUSTER_PREFIX),
        ],
        merge="same",
    )
    if not mixed.obs_names.is_unique:
        mixed.obs_names_make_unique()
    for key in (batch_key, low_key, high_key, OBS_KEYS.ORIGIN):
        mixed.obs[key] = mixed.obs[key].astype("category")
    return mixed
