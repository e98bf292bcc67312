"""SCBIOT: scvi-tools model of scBIOT part B (dual-view prototype VAE on the OT embedding; spec §4, §6)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LabelsWithUnlabeledObsField, ObsmField
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from .._validation import check_finite, check_n_categories
from ._constants import KEYS, REGISTRY_KEYS
from ._module import SCBIOTVAE
from ._query import complete_query_map, project_query
from ._trainingplan import BalancedDataSplitter, SCBIOTTrainingPlan

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

_SPLIT_SEED = 42
_K_VAR = 2.0
_K_PRIOR = 3.0
READOUTS = ("poe_pcr", "mean_view1")


def pseudo_labels(
    adata: AnnData,
    use_rep: str = KEYS.OT_OUT,
    resolution: float = 0.8,
    key_added: str = KEYS.PSEUDO,
    n_neighbors: int = 15,
    metric: str = "euclidean",
    random_state: int = 0,
) -> pd.Series:
    """OT pseudo-labels: Leiden clusters of the kNN graph of ``obsm[use_rep]`` (spec §4.1).

    Only ``adata.obs[key_added]`` is written (the graph is built on a private copy).

    Parameters
    ----------
    adata
        AnnData with ``obsm[use_rep]``.
    use_rep
        Embedding (the OT output).
    resolution
        Leiden resolution (0.8 RNA, 1.0 SNARE-seq, 0.02 ATAC brain in the paper's notebooks).
    key_added
        ``obs`` column for the cluster labels.
    n_neighbors, metric
        kNN graph settings (scanpy).
    random_state
        Leiden seed.

    Returns
    -------
    pandas.Series
        The categorical labels (also in ``adata.obs[key_added]``).

    Examples
    --------
    >>> pseudo_labels(adata, "X_scbiot_ot", resolution=0.8)  # doctest: +SKIP
    """
    import anndata as ad
    import scanpy as sc

    if use_rep not in adata.obsm:
        raise KeyError(f"use_rep={use_rep!r} is not in adata.obsm (available: {sorted(adata.obsm.keys())}).")
    tmp = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()))
    tmp.obsm["rep"] = np.asarray(adata.obsm[use_rep], dtype=np.float32)
    sc.pp.neighbors(
        tmp,
        n_neighbors=min(n_neighbors, adata.n_obs - 1),
        use_rep="rep",
        metric=metric,
        random_state=random_state,
    )
    sc.tl.leiden(
        tmp,
        resolution=resolution,
        key_added="leiden",
        random_state=random_state,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    adata.obs[key_added] = tmp.obs["leiden"].values
    return adata.obs[key_added]


class SCBIOT(UnsupervisedTrainingMixin, BaseModelClass):
    """scBIOT dual-view prototype VAE on an OT-refined embedding (part B).

    A tokenised-Transformer VAE sees two views of the OT embedding (per-feature quantile → normal; shrunken
    per-batch robust standardisation), trained with view-1 reconstruction + KL and prototype losses (DEC, centre
    pull, prototype repulsion, CosFace on confident self-labels, label-smoothed CE on OT pseudo-labels, cross-view
    consistency) with an EMA prototype update. The epoch with the best train NMI vs the pseudo-labels is kept.
    The latent is the PCR-tilted product of experts of the two views' posteriors, reduced by PCA.

    Typical workflow: ``scvi_ext.scbiot.integrate`` (part A) → :func:`pseudo_labels` → ``SCBIOT``.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_prototypes
        Number of prototypes (64); the number of pseudo-classes must not exceed it.
    d_token, n_layers, ffn_factor
        Transformer sizes (4 / 2 / 32).
    train_size
        Fraction of cells used for training and for fitting the view transforms (0.9, split seed 42).
    **hyperparams
        Loss hyperparameters (``proto_tau``, ``cosface_m``, ``repulse_target``, ``conf_thr``, ``label_eps``,
        ``proto_ema_m``, ``lam_repulse``, ``lam_cons``, ``kl_view1``, ``kl_view2``; spec §4.8). The scheduled
        weights ``lam_clust``/``lam_center``/``lam_margin``/``lam_sup`` are set through
        ``plan_kwargs={"term_weights": {"prototype"|"center"|"margin"|"sup": w}}``.

    References
    ----------
    scBIOT (Hai Hui Lab), extended methods "dual-view VAE with prototype-aware clustering", Eqs. 1-11;
    reference code github.com/haihuilab/scbiot v1.0.7 ``models/vae.py``, ``models/vae_train.py``.

    Examples
    --------
    >>> import scvi_ext.scbiot as scb
    >>> scb.integrate(adata, "rna", obsm_key="X_pca", batch_key="batch")  # doctest: +SKIP
    >>> scb.pseudo_labels(adata, "X_scbiot_ot")  # doctest: +SKIP
    >>> scb.SCBIOT.setup_anndata(adata, "X_scbiot_ot", "batch", pseudo_label_key="leiden_scbiot_ot")  # doctest: +SKIP
    >>> model = scb.SCBIOT(adata)  # doctest: +SKIP
    >>> model.train(max_epochs=80)  # doctest: +SKIP
    >>> adata.obsm["X_scbiot"] = model.get_latent_representation(n_components=30)  # doctest: +SKIP
    """

    _module_cls = SCBIOTVAE
    _training_plan_cls = SCBIOTTrainingPlan
    _data_splitter_cls = BalancedDataSplitter

    def __init__(
        self,
        adata: AnnData | None = None,
        n_prototypes: int = 64,
        d_token: int = 4,
        n_layers: int = 2,
        ffn_factor: int = 32,
        train_size: float = 0.9,
        **hyperparams: Any,
    ):
        super().__init__(adata)
        self._ref_n_batch = hyperparams.pop("_ref_n_batch", None)
        ref_n_quantiles = hyperparams.pop("_ref_n_quantiles", None)
        if not 0 < train_size <= 1:
            raise ValueError(f"train_size must be in (0, 1], got {train_size!r}.")
        self.train_size = float(train_size)
        self._module_kwargs = {
            "n_prototypes": n_prototypes,
            "d_token": d_token,
            "n_layers": n_layers,
            "ffn_factor": ffn_factor,
            **hyperparams,
        }
        n_batch = self._ref_n_batch or self.summary_stats.n_batch
        labels_state = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
        has_pseudo = labels_state.original_key is not None and not str(labels_state.original_key).startswith(
            "_scvi"
        )
        mapping = list(labels_state.categorical_mapping)
        unl = labels_state.get("unlabeled_category", None)
        unlabeled_code = mapping.index(unl) if (unl is not None and unl in mapping) else -1
        n_classes = len(mapping) - (1 if unlabeled_code >= 0 else 0)
        if has_pseudo and n_classes > n_prototypes:
            raise ValueError(
                f"pseudo_label_key has {n_classes} classes but n_prototypes={n_prototypes}; pseudo-label codes "
                "index prototypes directly, so use a lower Leiden resolution or a larger n_prototypes."
            )
        if adata is not None:
            n = adata.n_obs
            perm = np.random.RandomState(_SPLIT_SEED).permutation(n)
            n_train = n if self.train_size >= 1 else int(math.ceil(self.train_size * n))
            n_quantiles = ref_n_quantiles or int(max(min(n_train // 30, 1000), 10))
            self.module = self._module_cls(
                n_input=self.summary_stats.n_X,
                n_batch=n_batch,
                has_pseudo_labels=has_pseudo,
                unlabeled_code=unlabeled_code,
                n_quantiles=n_quantiles,
                **self._module_kwargs,
            )
            self.train_indices_ = np.sort(perm[:n_train])
            self.validation_indices_ = np.sort(perm[n_train:])
            if self._ref_n_batch is None:
                X = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY), dtype=np.float32)
                b = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
                self.module.fit_views(X[self.train_indices_], b[self.train_indices_])
        self.readout_state_: dict | None = None
        # what a query given as counts needs (build_query_map + the reference embeddings); saved with the model
        x_key = self.adata_manager.data_registry[REGISTRY_KEYS.X_KEY].attr_key
        b_key = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).original_key
        self.query_map_: dict | None = None if adata is None else complete_query_map(adata, x_key, b_key)
        self._model_summary_string = (
            f"SCBIOT model: D={self.summary_stats.n_X}, n_batch={n_batch}, n_prototypes={n_prototypes}, "
            f"pseudo-labels={'yes' if has_pseudo else 'no'}"
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        obsm_key: str = KEYS.OT_OUT,
        batch_key: str = "batch",
        pseudo_label_key: str | None = None,
        unlabeled_category: str = "unknown",
        **kwargs: Any,
    ) -> None:
        """Register the OT embedding (the model's data), the batches and optional OT pseudo-labels.

        Parameters
        ----------
        adata
            AnnData.
        obsm_key
            Embedding to model (``D`` = its width), normally the output of ``integrate_ot``.
        batch_key
            Batch column (used by view 2 and balanced sampling; at least two batches).
        pseudo_label_key
            Pseudo-label column (Leiden on the OT embedding; :func:`pseudo_labels`); ``None`` trains without
            ``L_sup``.
        unlabeled_category
            Value of ``pseudo_label_key`` meaning "no label".

        Examples
        --------
        >>> SCBIOT.setup_anndata(adata, "X_scbiot_ot", "batch", pseudo_label_key="leiden_scbiot_ot")  # doctest: +SKIP
        """
        if obsm_key not in adata.obsm:
            raise KeyError(
                f"obsm_key={obsm_key!r} is not in adata.obsm (available: {sorted(adata.obsm.keys())}); "
                "run scvi_ext.scbiot.integrate_ot first."
            )
        check_finite(np.asarray(adata.obsm[obsm_key]), f"adata.obsm[{obsm_key!r}]")
        check_n_categories(adata, batch_key, 2, "batch_key")
        if pseudo_label_key is not None and pseudo_label_key not in adata.obs:
            raise KeyError(f"pseudo_label_key={pseudo_label_key!r} is not a column of adata.obs.")
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            ObsmField(REGISTRY_KEYS.X_KEY, obsm_key),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            LabelsWithUnlabeledObsField(REGISTRY_KEYS.LABELS_KEY, pseudo_label_key, unlabeled_category),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def train(
        self,
        max_epochs: int = 80,
        batch_size: int = 8192,
        lr: float = 1e-2,
        accelerator: str = "auto",
        devices: int | str = "auto",
        balanced_sampling: bool = True,
        plan_kwargs: dict | None = None,
        **trainer_kwargs: Any,
    ):
        """Train with AdamW (warm-up + cosine), batch-balanced minibatches and best-NMI state selection.

        What matters is the number of optimiser steps, ``max_epochs · ⌈n_train / batch_size⌉``: on a few hundred
        cells the default batch size gives one step per epoch, and runs of a few dozen steps leave the latent
        clearly below the OT embedding (``benchmarks/results/scbiot/latent_quality.md``); a few hundred steps
        (e.g. ``max_epochs=50, batch_size=128`` on ~500 cells) bring it level. The LR warm-up (100 steps) is
        bounded by 10 % of the run (``plan_kwargs={"max_warmup_fraction": None}`` restores the v1.0.7 schedule).

        Parameters
        ----------
        max_epochs
            Epochs (80).
        batch_size
            Minibatch size (8192).
        lr
            Learning rate (1e-2).
        accelerator, devices
            Lightning settings.
        balanced_sampling
            Draw ``⌈n/B⌉`` cells per batch with replacement each epoch (spec §4.6).
        plan_kwargs
            :class:`~scvi_ext.scbiot._trainingplan.SCBIOTTrainingPlan` arguments.
        **trainer_kwargs
            scvi ``Trainer`` arguments (``enable_progress_bar``, ...).

        Examples
        --------
        >>> model.train(max_epochs=2)  # doctest: +SKIP
        """
        if getattr(self, "_is_query", False):
            raise ValueError(
                "Nothing to train: an SCBIOT query model reuses the reference network, view statistics and "
                "read-out unchanged (the network has no batch input); use get_latent_representation directly."
            )
        plan_kwargs = {"lr": lr, **(plan_kwargs or {})}
        self.module._best = None
        datasplitter_kwargs = trainer_kwargs.pop("datasplitter_kwargs", {}) or {}
        datasplitter_kwargs.setdefault("balanced", balanced_sampling)
        datasplitter_kwargs.setdefault(
            "external_indexing", [self.train_indices_, self.validation_indices_, np.array([], dtype=int)]
        )
        trainer_kwargs.setdefault("check_val_every_n_epoch", max_epochs + 1)  # the selection is on train NMI
        out = super().train(
            max_epochs=max_epochs,
            batch_size=batch_size,
            accelerator=accelerator,
            devices=devices,
            plan_kwargs=plan_kwargs,
            datasplitter_kwargs=datasplitter_kwargs,
            **trainer_kwargs,
        )
        best = getattr(self.module, "_best", None)
        if best is not None:
            nmi, epoch, state = best
            dev = next(self.module.parameters()).device
            self.module.load_state_dict({k: v.to(dev) for k, v in state.items()})
            self.best_epoch_ = int(epoch)
            self.best_nmi_ = float(nmi)
            logger.info("SCBIOT: restored epoch %d (train NMI vs pseudo-labels %.3f)", epoch, nmi)
        self.module._best = None
        self.readout_state_ = None
        self.module.eval()
        return out

    # ------------------------------------------------------------------ read-outs
    @torch.inference_mode()
    def _posteriors(self, adata: AnnData | None, batch_size: int = 4096):
        adata = self._validate_anndata(adata)
        dl = self._make_data_loader(adata=adata, batch_size=batch_size, shuffle=False)
        self.module.eval()
        out = {k: [] for k in ("mu1", "sd1", "mu2", "sd2", "q", "batch")}
        for tensors in dl:
            io = self.module.inference(**self.module._get_inference_input(tensors))
            for v in ("1", "2"):
                out[f"mu{v}"].append(io[f"mu{v}"][:, 1:].flatten(1).cpu())
                out[f"sd{v}"].append(torch.exp(0.5 * io[f"logvar{v}"][:, 1:]).flatten(1).cpu())
            B = io["z1"].shape[0]
            zc = 0.5 * (io["z1"].reshape(B, -1) + io["z2"].reshape(B, -1))
            out["q"].append(self.module._logits(zc).softmax(1).cpu())
            out["batch"].append(tensors[REGISTRY_KEYS.BATCH_KEY].view(-1).cpu())
        return {k: torch.cat(v).numpy() for k, v in out.items()}

    @staticmethod
    def _eta2(mu: np.ndarray, batch: np.ndarray) -> np.ndarray:
        grand = mu.mean(0)
        total = ((mu - grand) ** 2).sum(0) + 1e-12
        between = np.zeros_like(grand)
        for bb in np.unique(batch):
            sel = mu[batch == bb]
            between += len(sel) * (sel.mean(0) - grand) ** 2
        return np.clip(between / total, 0.0, 1.0)

    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        n_components: int | None = 50,
        readout: str = "poe_pcr",
        prior_pcr: float = 1.0,
        batch_size: int = 4096,
    ) -> np.ndarray:
        """Fused latent: PCR-tilted product of experts of the two views, reduced by PCA (spec §4.7).

        ``η²`` (batch dominance of each latent element) and the PCA basis are fitted on the training AnnData at
        the first call and stored on the model (saved with it), so query read-outs reuse them.

        Parameters
        ----------
        adata
            AnnData (default: the training one).
        n_components
            PCA components (``None``: the full ``D·d_token`` fused latent).
        readout
            ``"poe_pcr"`` (default) or ``"mean_view1"`` (view-1 posterior mean).
        prior_pcr
            Prior precision scale π (1; the paper's ATAC/multiome notebooks used 5).
        batch_size
            Minibatch size of the encoding pass.

        Returns
        -------
        numpy.ndarray
            ``(n_obs, n_components)`` float32.

        Examples
        --------
        >>> Z = model.get_latent_representation(n_components=30)  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}.")
        if (
            self.readout_state_ is None
            or self.readout_state_.get("prior_pcr") != prior_pcr
            or self.readout_state_.get("readout") != readout
            or self.readout_state_.get("n_comp_req") != n_components
        ):
            if getattr(self, "_is_query", False):
                raise ValueError(
                    "This query model reuses the reference's read-out (η² and PCA basis); call "
                    "get_latent_representation with the settings used on the reference model "
                    f"(n_components={self.readout_state_['n_comp_req']}, readout={self.readout_state_['readout']!r}, "
                    f"prior_pcr={self.readout_state_['prior_pcr']})."
                )
            self._fit_readout(n_components, readout, prior_pcr, batch_size)
        post = self._posteriors(adata, batch_size)
        Z = self._fuse(post, readout, prior_pcr)
        st = self.readout_state_
        if st["components"] is None:
            return Z.astype(np.float32)
        return ((Z - st["mean"]) @ st["components"].T).astype(np.float32)

    def _fuse(self, post: dict, readout: str, prior_pcr: float) -> np.ndarray:
        if readout == "mean_view1":
            return post["mu1"]
        st = self.readout_state_
        e1, e2 = st["eta1"], st["eta2"]
        v1 = post["sd1"] ** 2 * (1 + _K_VAR * e1)
        v2 = post["sd2"] ** 2 * (1 + _K_VAR * e2)
        pi = prior_pcr * (1 + _K_PRIOR * 0.5 * (e1 + e2))
        return (post["mu1"] / v1 + post["mu2"] / v2) / (1 / v1 + 1 / v2 + pi)

    def _fit_readout(self, n_components, readout, prior_pcr, batch_size) -> None:
        post = self._posteriors(None, batch_size)
        self.readout_state_ = {
            "eta1": self._eta2(post["mu1"], post["batch"]),
            "eta2": self._eta2(post["mu2"], post["batch"]),
            "prior_pcr": prior_pcr,
            "readout": readout,
            "n_comp_req": n_components,
            "mean": None,
            "components": None,
        }
        Z = self._fuse(post, readout, prior_pcr)
        if n_components is not None:
            from sklearn.decomposition import PCA

            k = int(min(n_components, Z.shape[0] - 1, Z.shape[1]))
            pca = PCA(
                n_components=k, svd_solver="arpack" if k < min(Z.shape) else "full", random_state=42
            ).fit(Z)
            self.readout_state_["mean"] = pca.mean_
            self.readout_state_["components"] = pca.components_

    @torch.inference_mode()
    def predict(
        self, adata: AnnData | None = None, soft: bool = False, batch_size: int = 4096
    ) -> np.ndarray | pd.DataFrame:
        """Prototype (cluster) assignment of each cell: argmax of the fused prototype softmax.

        Parameters
        ----------
        adata
            AnnData (default: the training one).
        soft
            Return the soft assignments ``(n_obs, n_prototypes)`` as a DataFrame instead.
        batch_size
            Minibatch size.

        Returns
        -------
        numpy.ndarray or pandas.DataFrame
            Prototype ids ``(n_obs,)``, or the probabilities.

        Examples
        --------
        >>> clusters = model.predict()  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        q = self._posteriors(adata, batch_size)["q"]
        if soft:
            return pd.DataFrame(
                q, index=adata.obs_names, columns=[f"prototype_{i}" for i in range(q.shape[1])]
            )
        return q.argmax(1)

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: SCBIOT | str,
        inplace_subset_query_vars: bool = False,
        accelerator: str = "auto",
        device: int | str = "auto",
        counts_layer: str | None = None,
    ) -> SCBIOT:
        """Map query cells onto a trained reference: same network, same view transforms and read-out.

        The network has no batch input, so nothing new is learned: unseen batches use the global view-2
        statistics (spec §6.4). The query's OT embedding is taken from ``adata.obsm`` under the reference's key
        when present (e.g. ``integrate_ot`` run on reference + query together). Otherwise, when the reference
        was set up on an AnnData carrying :func:`~scvi_ext.scbiot.build_query_map`'s entry, it is rebuilt from
        the query's counts with the reference's stored projection (PCA loadings or LSI components, feature list,
        normalisation) and the OT displacement of the nearest reference cells (:func:`project_query`); both
        ``obsm`` entries are written to ``adata``. The reference model is not modified.

        Parameters
        ----------
        adata
            Query AnnData.
        reference_model
            Trained :class:`SCBIOT` (or a directory saved by :meth:`save`).
        inplace_subset_query_vars, accelerator, device
            Kept for scvi-tools API compatibility (unused; the data are an ``obsm`` embedding).
        counts_layer
            Query counts layer used when the OT embedding is rebuilt (``None``: ``"counts"`` if present, else
            ``X``).

        Returns
        -------
        SCBIOT
            A model for the query whose latent is comparable to the reference's.

        Examples
        --------
        >>> q = SCBIOT.load_query_data(query, model)  # doctest: +SKIP
        >>> Zq = q.get_latent_representation()  # doctest: +SKIP
        """
        if isinstance(reference_model, str):
            reference_model = cls.load(reference_model)
        ref_manager = reference_model.adata_manager
        x_key = ref_manager.data_registry[REGISTRY_KEYS.X_KEY].attr_key
        qmap = getattr(reference_model, "query_map_", None)
        if x_key not in adata.obsm:
            if qmap is None:
                raise KeyError(
                    f"The query lacks adata.obsm[{x_key!r}] (the reference model's input embedding) and the "
                    "reference stores no query map: run integrate_ot on reference + query, or build the "
                    "reference with scvi_ext.scbiot.build_query_map before SCBIOT(adata)."
                )
            b_key = ref_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).original_key
            project_query(adata, qmap, layer=counts_layer, batch_key=b_key if b_key in adata.obs else None)
        labels_key = ref_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY).original_key
        if labels_key is not None and not str(labels_key).startswith("_scvi") and labels_key not in adata.obs:
            unl = ref_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY).get(
                "unlabeled_category", "unknown"
            )
            adata.obs[labels_key] = pd.Categorical([unl] * adata.n_obs)  # queries carry no pseudo-labels
        width = np.asarray(adata.obsm[x_key]).shape[1]
        if width != reference_model.summary_stats.n_X:
            raise ValueError(
                f"adata.obsm[{x_key!r}] has {width} columns; the reference model expects "
                f"{reference_model.summary_stats.n_X}."
            )
        if reference_model.readout_state_ is None:
            reference_model.get_latent_representation()  # fit the read-out on the reference (default settings)
        new_manager = ref_manager.transfer_fields(adata, extend_categories=True)
        cls.register_manager(new_manager)
        non_kwargs = dict(reference_model.init_params_.get("non_kwargs", {}))
        hyper = dict(reference_model.init_params_.get("kwargs", {}).get("hyperparams", {}) or {})
        model = cls(
            adata,
            _ref_n_batch=reference_model.module.n_batch,
            _ref_n_quantiles=int(reference_model.module.quantiles.shape[1]),
            **non_kwargs,
            **hyper,
        )
        model.module.load_state_dict(reference_model.module.state_dict())
        model.module.to(next(reference_model.module.parameters()).device)
        model.readout_state_ = reference_model.readout_state_
        model.query_map_ = qmap
        model._is_query = True
        model.is_trained_ = True
        model.module.eval()
        return model
