"""SysVI model: scvi-tools model class around :class:`~scvi_ext.sysvi._module.SysVIModule`."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
)
from scvi.model.base import ArchesMixin, BaseModelClass, UnsupervisedTrainingMixin, VAEMixin
from scvi.module._constants import MODULE_KEYS

from .._validation import (
    check_counts,
    check_finite,
    check_n_categories,
    check_obs_key,
    get_matrix,
    looks_like_counts,
)
from ..nn import PRIOR_NAMES, select_pseudoinput_indices
from ..train import CycleTrainingPlan
from ..train._constants import TERM_NAMES
from ._constants import (
    DEFAULT_CYCLE_WEIGHT,
    DEFAULT_N_PRIOR_COMPONENTS,
    DEFAULT_PRIOR,
    FIDELITY,
    LIKELIHOOD,
    LOSS_NAMES,
    SYSVI_KEYS,
)
from ._module import SysVIModule

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Default fidelity mode, chosen by the parity benchmark at the default 400 epochs
#: (benchmarks/results/sysvi/parity.md: mean Total reference 0.819 vs paper 0.814 over pancreas + cellbench).
DEFAULT_FIDELITY = FIDELITY.REFERENCE


def _where(layer: str | None) -> str:
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


class SysVI(UnsupervisedTrainingMixin, VAEMixin, ArchesMixin, BaseModelClass):
    """sysVI: cVAE with a VampPrior and latent cycle-consistency for datasets with substantial batch effects.

    Hrovatin, Moinfar et al., *Integrating single-cell RNA-seq datasets with substantial batch effects*,
    BMC Genomics 26:974 (2025), doi:10.1186/s12864-025-12126-3.

    The ``batch_key`` given to :meth:`setup_anndata` is the *system* (species, organoid vs tissue, cells vs
    nuclei): a cVAE condition and the only covariate switched by the cycle loss. Extra covariates (samples)
    are cVAE conditions only. Same API and defaults as ``scvi.external.SysVI``; the VampPrior is the
    suite's :class:`scvi_ext.nn.VampPrior` and training uses :class:`scvi_ext.train.CycleTrainingPlan`.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    prior
        ``"vamp"`` (default) or ``"standard_normal"`` (a plain cVAE when the cycle weight is 0).
    n_prior_components
        Number of VampPrior components (default 5).
    pseudoinputs_data_indices
        Rows initialising the pseudo-inputs (1-D, length ``n_prior_components``); ``None`` draws them with
        ``np.random.randint`` like scvi-tools (reproducible via ``scvi.settings.seed``).
    fidelity
        ``"reference"`` (the forward pass of ``scvi.external.SysVI``) or ``"paper"`` (the paper's cycle,
        prior and likelihood; sysvi.md §6). Default ``"reference"``, chosen on real data at the default 400
        epochs, see ``benchmarks/results/sysvi/parity.md``.
    likelihood
        ``"gaussian"`` on log-normalised data (published) or ``"nb"`` on raw counts (register the counts
        layer in :meth:`setup_anndata`).
    **model_kwargs
        Passed to :class:`~scvi_ext.sysvi._module.SysVIModule` (``n_latent``, ``n_hidden``, ``n_layers``,
        ``dropout_rate``, ``out_var_mode``, ``embed_categorical_covariates``, ``trainable_priors``, ...).

    Examples
    --------
    >>> SysVI.setup_anndata(adata, batch_key="species", categorical_covariate_keys=["sample"])  # doctest: +SKIP
    >>> model = SysVI(adata)  # doctest: +SKIP
    >>> model.train(max_epochs=200, plan_kwargs={"z_distance_cycle_weight": 5})  # doctest: +SKIP
    >>> adata.obsm["X_sysvi"] = model.get_latent_representation()  # doctest: +SKIP
    """

    _module_cls = SysVIModule
    _training_plan_cls = CycleTrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        prior: Literal["standard_normal", "vamp"] = DEFAULT_PRIOR,
        n_prior_components: int = DEFAULT_N_PRIOR_COMPONENTS,
        pseudoinputs_data_indices: np.ndarray | None = None,
        fidelity: Literal["reference", "paper"] = DEFAULT_FIDELITY,
        likelihood: Literal["gaussian", "nb"] = LIKELIHOOD.GAUSSIAN,
        **model_kwargs: Any,
    ):
        super().__init__(adata)
        if fidelity not in FIDELITY:
            raise ValueError(f"fidelity must be one of {tuple(FIDELITY)}, got {fidelity!r}.")
        if likelihood not in LIKELIHOOD:
            raise ValueError(f"likelihood must be one of {tuple(LIKELIHOOD)}, got {likelihood!r}.")
        if prior not in PRIOR_NAMES:
            raise ValueError(f"prior must be one of {tuple(PRIOR_NAMES)}, got {prior!r}.")
        self._check_data_for_likelihood(adata, likelihood)

        pseudoinput_data = None
        if prior == PRIOR_NAMES.VAMP:
            n_cells = self.summary_stats.n_cells
            if pseudoinputs_data_indices is not None:
                pseudoinputs_data_indices = np.asarray(pseudoinputs_data_indices)
                if (
                    pseudoinputs_data_indices.ndim != 1
                    or pseudoinputs_data_indices.shape[0] != n_prior_components
                ):
                    raise ValueError(
                        "pseudoinputs_data_indices must be a 1-D array of length n_prior_components="
                        f"{n_prior_components}; got shape {pseudoinputs_data_indices.shape}."
                    )
                if pseudoinputs_data_indices.max() >= n_cells:
                    warnings.warn(
                        "pseudoinputs_data_indices exceed the number of cells; drawing new ones (expected when "
                        "building a query model: the reference's pseudo-inputs are loaded afterwards).",
                        UserWarning,
                        stacklevel=2,
                    )
                    pseudoinputs_data_indices = None
            if pseudoinputs_data_indices is None:
                pseudoinputs_data_indices = select_pseudoinput_indices(n_cells, n_prior_components)
            pseudoinput_data = next(
                iter(
                    self._make_data_loader(
                        adata=adata,
                        indices=pseudoinputs_data_indices,
                        batch_size=n_prior_components,
                        shuffle=False,
                    )
                )
            )

        n_cats_per_cov = (
            self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY).n_cats_per_key
            if REGISTRY_KEYS.CAT_COVS_KEY in self.adata_manager.data_registry
            else None
        )
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_batch=self.summary_stats.n_batch,
            n_continuous_cov=self.summary_stats.get("n_extra_continuous_covs", 0),
            n_cats_per_cov=n_cats_per_cov,
            prior=prior,
            n_prior_components=n_prior_components,
            pseudoinput_data=pseudoinput_data,
            fidelity=fidelity,
            likelihood=likelihood,
            **model_kwargs,
        )
        self._model_summary_string = (
            f"SysVI (scvi-ext): cVAE + {prior} prior + latent cycle-consistency; fidelity={fidelity!r}, "
            f"likelihood={likelihood!r}."
        )
        self.init_params_ = self._get_init_params(locals())

    def _check_data_for_likelihood(self, adata: AnnData | None, likelihood: str) -> None:
        if adata is None:
            return
        layer = self.adata_manager.data_registry[REGISTRY_KEYS.X_KEY].attr_key
        layer = None if layer == "X" else layer
        X = get_matrix(adata, layer)
        where = _where(layer)
        if likelihood == LIKELIHOOD.NB:
            check_counts(X, where)
        elif looks_like_counts(X):
            warnings.warn(
                f"{where} looks like raw counts (non-negative integers) but SysVI's Gaussian likelihood expects "
                "log-normalised expression: normalise + log1p it (scanpy normalize_total + log1p), register a "
                "layer holding that, or use likelihood='nb' on the counts.",
                UserWarning,
                stacklevel=3,
            )

    def train(
        self,
        max_epochs: int | None = None,
        plan_kwargs: dict | None = None,
        **train_kwargs: Any,
    ):
        """Train the model (KL warm-up disabled, as in scvi-tools' SysVI).

        Parameters
        ----------
        max_epochs
            ``None``: ``min(round(20000 / n_cells * 400), 400)`` (scvi-tools' heuristic).
        plan_kwargs
            For :class:`scvi_ext.train.CycleTrainingPlan` / :class:`scvi.train.TrainingPlan`: ``lr``,
            ``weight_decay``, ``eps``, ``max_kl_weight``, ``reconstruction_weight``,
            ``z_distance_cycle_weight`` (default 2; 0 disables the cycle), ``term_warmup={"cycle": (start,
            n)}`` (optional cycle warm-up). ``kl_weight`` is read as ``max_kl_weight`` (with a warning; the
            reference ignores it, sysvi.md §6 A10); KL warm-up arguments are reset to 0 with a warning.
        **train_kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` (``accelerator``,
            ``batch_size``, ``train_size``, ``enable_progress_bar``, other Lightning trainer arguments).

        Examples
        --------
        >>> model.train(max_epochs=2, plan_kwargs={"z_distance_cycle_weight": 5})  # doctest: +SKIP
        """
        plan_kwargs = dict(plan_kwargs or {})
        for key in ("n_epochs_kl_warmup", "n_steps_kl_warmup"):
            if plan_kwargs.get(key) not in (None, 0):
                warnings.warn(
                    "KL warm-up is not recommended for SysVI; n_epochs_kl_warmup and n_steps_kl_warmup are reset to 0.",
                    UserWarning,
                    stacklevel=2,
                )
            plan_kwargs[key] = 0
        if LOSS_NAMES.KL_WEIGHT_KWARG in plan_kwargs:
            value = float(plan_kwargs.pop(LOSS_NAMES.KL_WEIGHT_KWARG))
            warnings.warn(
                f"plan_kwargs['kl_weight']={value} is used as max_kl_weight (scvi-tools' SysVI ignores kl_weight).",
                UserWarning,
                stacklevel=2,
            )
            plan_kwargs.setdefault("max_kl_weight", value)
        term_loss_kwargs = dict(plan_kwargs.pop("term_loss_kwargs", None) or {})
        term_loss_kwargs.setdefault(TERM_NAMES.CYCLE, LOSS_NAMES.CYCLE_WEIGHT_KWARG)
        plan_kwargs["term_loss_kwargs"] = term_loss_kwargs
        weights = plan_kwargs.get("term_weights") or {}
        if TERM_NAMES.CYCLE not in weights:
            plan_kwargs.setdefault(LOSS_NAMES.CYCLE_WEIGHT_KWARG, DEFAULT_CYCLE_WEIGHT)
        cyc_weight = weights.get(TERM_NAMES.CYCLE, plan_kwargs.get(LOSS_NAMES.CYCLE_WEIGHT_KWARG))
        if cyc_weight and self.summary_stats.n_batch < 2:
            raise ValueError("The cycle loss needs at least two systems in batch_key.")
        return super().train(max_epochs=max_epochs, plan_kwargs=plan_kwargs, **train_kwargs)

    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: str | int | None = None,
        library_size: float = 1.0,
        batch_size: int | None = None,
        return_numpy: bool = False,
    ) -> np.ndarray | pd.DataFrame:
        """Decoded expression at the posterior mean, optionally as if every cell came from one system.

        Gaussian likelihood: the decoder mean (log-normalised scale). NB likelihood: the normalised
        expression frequencies times ``library_size``.

        Parameters
        ----------
        adata
            AnnData (default: the training data).
        indices
            Cells to use.
        transform_batch
            A system category (name or code) to decode every cell with; ``None`` keeps each cell's own.
        library_size
            NB only: scale of the frequencies (e.g. ``1e4``).
        batch_size
            Minibatch size.
        return_numpy
            Return an array instead of a DataFrame (cells x genes).

        Returns
        -------
        numpy.ndarray or pandas.DataFrame

        Examples
        --------
        >>> expr = model.get_normalized_expression(transform_batch="human")  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        code = None
        if transform_batch is not None:
            mapping = list(self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping)
            if isinstance(transform_batch, int | np.integer) and transform_batch not in mapping:
                if not 0 <= int(transform_batch) < len(mapping):
                    raise ValueError(
                        f"transform_batch={transform_batch} is not a system code (0..{len(mapping) - 1})."
                    )
                code = int(transform_batch)
            elif transform_batch in mapping:
                code = mapping.index(transform_batch)
            else:
                raise ValueError(
                    f"transform_batch={transform_batch!r} is not a system; choose one of {mapping}."
                )
        dl = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        module = self.module
        out = []
        for tensors in dl:
            inf_in = module._get_inference_input(tensors)
            qz = module.inference(**inf_in)[MODULE_KEYS.QZ_KEY]
            gen_in = module._get_generative_input(tensors, {MODULE_KEYS.Z_KEY: qz.loc})
            if code is not None:
                gen_in[MODULE_KEYS.BATCH_INDEX_KEY] = torch.full_like(
                    gen_in[MODULE_KEYS.BATCH_INDEX_KEY], code
                )
            px = module.generative(**gen_in, compute_cycle=False)[SYSVI_KEYS.PX]
            val = px["scale"] * library_size if module.likelihood == LIKELIHOOD.NB else px.loc
            out.append(val.cpu().numpy())
        expr = np.concatenate(out, axis=0)
        if return_numpy:
            return expr
        obs_names = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        return pd.DataFrame(expr, index=obs_names, columns=adata.var_names)

    @classmethod
    def _reference_systems(cls, reference_model: str | BaseModelClass) -> tuple[str, list[str]]:
        if isinstance(reference_model, str):
            from scvi.model.base._save_load import _load_saved_files

            attr_dict, _, _, _ = _load_saved_files(reference_model, load_adata=False)
            registry = attr_dict["registry_"]
        else:
            registry = reference_model.adata_manager.registry
        field = registry["field_registries"][REGISTRY_KEYS.BATCH_KEY]
        key = registry["setup_args"]["batch_key"]
        return key, [str(c) for c in field["state_registry"]["categorical_mapping"]]

    @classmethod
    def load_query_data(
        cls, adata: AnnData | None = None, reference_model: str | BaseModelClass | None = None, **kwargs
    ):
        """Map a query onto a trained reference (scArches); the query may not bring new systems.

        New categories of the extra categorical covariates are allowed (their one-hot columns are added
        and trained); ``transfer_batch`` is always ``False`` (as in scvi-tools' SysVI).

        Parameters
        ----------
        adata
            Query AnnData (log-normalised like the reference; run :meth:`prepare_query_anndata` first).
        reference_model
            Trained model or its save directory.
        **kwargs
            Passed to :meth:`scvi.model.base.ArchesMixin.load_query_data`.

        Returns
        -------
        SysVI
            The query model (train it briefly, then call :meth:`get_latent_representation`).

        Examples
        --------
        >>> q = SysVI.load_query_data(query, model)  # doctest: +SKIP
        >>> q.train(max_epochs=20)  # doctest: +SKIP
        """
        if kwargs.pop("transfer_batch", False):
            warnings.warn(
                "transfer_batch is not supported by SysVI and is set to False.", UserWarning, stacklevel=2
            )
        if adata is not None and reference_model is not None:
            key, systems = cls._reference_systems(reference_model)
            check_obs_key(adata, key, argument="batch_key")
            new = sorted(set(adata.obs[key].astype(str)) - set(systems))
            if new:
                raise ValueError(
                    f"The query brings new system(s) {new} in adata.obs[{key!r}]; SysVI can only map queries from "
                    f"the reference systems {systems}. Train a new model including them instead."
                )
        return super().load_query_data(adata, reference_model, transfer_batch=False, **kwargs)

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        batch_key: str,
        layer: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        weight_batches: bool = False,
        **kwargs: Any,
    ):
        """Register log-normalised expression (``layer``), the system (``batch_key``) and extra covariates.

        Parameters
        ----------
        adata
            AnnData with normalised + ``log1p`` expression in ``X`` or ``layers[layer]`` (raw counts only with
            ``SysVI(..., likelihood="nb")``).
        batch_key
            The *system* column (>= 2 categories): cVAE condition and the covariate switched by the cycle.
        layer
            Layer with the data; ``None`` uses ``X``.
        categorical_covariate_keys
            Extra categorical conditions (e.g. sample); never switched by the cycle.
        continuous_covariate_keys
            Extra continuous conditions.
        weight_batches
            Weight each cell's cycle loss by ``1 / n_cells(system)`` (experimental, as in scvi-tools; writes
            ``adata.obs['batch_weights']``).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Examples
        --------
        >>> SysVI.setup_anndata(adata, batch_key="species", categorical_covariate_keys=["sample"])  # doctest: +SKIP
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        check_n_categories(adata, batch_key, minimum=2, argument="batch_key")
        for keys, arg in (
            (categorical_covariate_keys, "categorical_covariate_keys"),
            (continuous_covariate_keys, "continuous_covariate_keys"),
        ):
            for key in keys or []:
                check_obs_key(adata, key, argument=arg)
        for key in continuous_covariate_keys or []:
            if not np.isfinite(np.asarray(adata.obs[key], dtype=float)).all():
                raise ValueError(f"continuous covariate adata.obs[{key!r}] contains NaN or infinite values.")
        check_finite(get_matrix(adata, layer), _where(layer))
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
        ]
        if weight_batches:
            warnings.warn(
                "Inverse system-size weights of the cycle loss are experimental.", UserWarning, stacklevel=2
            )
            counts = adata.obs[batch_key].value_counts()
            adata.obs[SYSVI_KEYS.BATCH_WEIGHTS] = (
                adata.obs[batch_key].map({c: 1 / n for c, n in counts.items()}).astype(float)
            )
            fields.append(NumericalObsField(SYSVI_KEYS.BATCH_WEIGHTS, SYSVI_KEYS.BATCH_WEIGHTS))
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)
