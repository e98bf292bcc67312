"""sysVI module: cVAE (Gaussian on log-normalised data, or NB on counts) + VampPrior + latent cycle loss.

Spec: ``../shared/specs/sysvi.md`` §1-§2 and §6. The VampPrior is the suite's :class:`scvi_ext.nn.VampPrior`
and the cycle distance is :func:`scvi_ext.train.cycle_latent_distance`; this file only adds the
encoder/decoder blocks (parameter names of scvi-tools' ``SysVAE``, so scArches freezing and state-dict
exchange with the reference work) and the sysVI forward pass with its two fidelity modes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module._constants import MODULE_KEYS
from scvi.module.base import BaseModuleClass, EmbeddingModuleMixin, LossOutput, auto_move_data
from scvi.nn import DecoderSCVI, FCLayers
from torch import nn
from torch.distributions import Normal

from ..nn import PRIOR_NAMES, make_prior, nb_log_prob
from ..train import cycle_latent_distance, random_other_category
from ._constants import FIDELITY, LIKELIHOOD, LOSS_NAMES, SYSVI_KEYS

_VAR_MODES = ("sample_feature", "feature")


class VarianceHead(nn.Module):
    """Strictly positive variance, per sample and feature (a linear layer) or per feature (a parameter).

    ``v = softplus(clip(a, ±(log(float_max) - 1e-4)))`` with NaN replaced by 0 (with a warning), as in
    scvi-tools' ``VarEncoder`` (sysvi.md §1.2). Attribute names (``encoder``, ``var_param``) match it.

    Parameters
    ----------
    n_input
        Width of the hidden representation (used by ``"sample_feature"``).
    n_output
        Number of variances.
    mode
        ``"sample_feature"`` or ``"feature"``.

    Examples
    --------
    >>> VarianceHead(8, 3, "feature")(torch.zeros(4, 8)).shape
    torch.Size([4, 3])
    """

    def __init__(self, n_input: int, n_output: int, mode: Literal["sample_feature", "feature"]):
        super().__init__()
        if mode not in _VAR_MODES:
            raise ValueError(f"var_mode must be one of {_VAR_MODES}, got {mode!r}.")
        self.mode = mode
        self.clip_thr = float(np.log(torch.finfo(torch.get_default_dtype()).max) - 1e-4)
        if mode == "sample_feature":
            self.encoder = nn.Linear(n_input, n_output)
        else:
            self.var_param = nn.Parameter(torch.zeros(1, n_output))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Variance ``(B, n_output)`` from the hidden representation ``h``."""
        v = self.encoder(h) if self.mode == "sample_feature" else self.var_param.expand(h.shape[0], -1)
        v = F.softplus(torch.clip(v, min=-self.clip_thr, max=self.clip_thr))
        if v.isnan().any():
            warnings.warn("Predicted variance contains NaN values; setting them to 0.", stacklevel=2)
            v = torch.nan_to_num(v)
        return v


class GaussianBlock(nn.Module):
    """Covariate-conditioned MLP with a Gaussian output: sysVI's encoder and decoder building block.

    ``scvi.nn.FCLayers`` trunk (covariates injected into every layer) + linear mean head + a
    :class:`VarianceHead`; returns ``{"q_dist": Normal(mean, sqrt(var) + 1e-12)[, "q": rsample]}``.
    Parameter names are those of scvi-tools' ``EncoderDecoder`` (``decoder_y``, ``mean_encoder``,
    ``var_encoder``), so states can be exchanged with ``scvi.external.SysVI``.

    Parameters
    ----------
    n_input, n_output
        Input and output widths.
    n_cat_list
        Categories per one-hot covariate (system first).
    n_cont
        Width of the continuous covariates (incl. embedded categoricals).
    n_hidden, n_layers
        Trunk width and depth.
    var_mode
        ``"sample_feature"`` or ``"feature"`` (see :class:`VarianceHead`).
    sample
        Also return one reparameterised draw ``"q"``.
    input_transform
        ``None`` or ``"log1p"`` (applied to the input first; used by the count-based NB variant).
    **fc_kwargs
        Passed to :class:`scvi.nn.FCLayers` (``dropout_rate``, ``use_batch_norm``, ``use_layer_norm``, ...).

    Examples
    --------
    >>> block = GaussianBlock(10, 3, n_cat_list=[2], n_cont=0, n_hidden=8, n_layers=1)
    >>> out = block(torch.randn(4, 10), batch_index=torch.zeros(4, 1, dtype=torch.long))
    >>> out["q_dist"].loc.shape
    torch.Size([4, 3])
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_cat_list: list[int],
        n_cont: int,
        n_hidden: int = 256,
        n_layers: int = 2,
        var_mode: Literal["sample_feature", "feature"] = "feature",
        sample: bool = False,
        input_transform: Literal["log1p"] | None = None,
        **fc_kwargs: Any,
    ):
        super().__init__()
        self.sample = sample
        self.input_transform = input_transform
        self.decoder_y = FCLayers(
            n_in=n_input,
            n_cat_list=n_cat_list,
            n_cont=n_cont,
            n_out=n_hidden,
            n_hidden=n_hidden,
            n_layers=n_layers,
            **fc_kwargs,
        )
        self.mean_encoder = nn.Linear(n_hidden, n_output)
        self.var_encoder = VarianceHead(n_hidden, n_output, mode=var_mode)

    def forward(
        self,
        x: torch.Tensor,
        batch_index: torch.Tensor | None = None,
        cont: torch.Tensor | None = None,
        cat_list: list[torch.Tensor] | None = None,
    ) -> dict[str, Any]:
        """Map ``x`` and covariates to a diagonal Normal.

        Parameters
        ----------
        x
            ``(B, n_input)``.
        batch_index
            System codes ``(B, 1)`` or a one-hot / all-zero ``(B, n_system)`` tensor.
        cont
            Continuous covariates ``(B, n_cont)`` or ``None``.
        cat_list
            Extra categorical covariates, codes ``(B, 1)`` or one-hot rows.

        Returns
        -------
        dict
            ``"q_dist"`` (Normal) and, if ``sample``, ``"q"``.
        """
        if self.input_transform == "log1p":
            x = torch.log1p(x)
        h = self.decoder_y(x, *([batch_index] + list(cat_list or [])), cont=cont)
        mean = self.mean_encoder(h)
        if mean.isnan().any() or mean.isinf().any():
            warnings.warn("Predicted mean contains NaN or infinite values; replacing them.", stacklevel=2)
            mean = torch.nan_to_num(mean)
        var = self.var_encoder(h)
        out: dict[str, Any] = {SYSVI_KEYS.Q_DIST: Normal(mean, var.sqrt() + 1e-12)}
        if self.sample:
            out[SYSVI_KEYS.Q_SAMPLE] = out[SYSVI_KEYS.Q_DIST].rsample()
        return out


class SysVIModule(BaseModuleClass, EmbeddingModuleMixin):
    """cVAE with an optional VampPrior and a latent cycle-consistency loss on the system covariate.

    Hrovatin, Moinfar et al., *Integrating single-cell RNA-seq datasets with substantial batch effects*,
    BMC Genomics 26:974 (2025), doi:10.1186/s12864-025-12126-3.

    The system (``batch``) is always one-hot; extra categorical covariates are one-hot or embedded
    (``embed_categorical_covariates``); covariates enter every layer in the order
    ``[continuous (+embeddings), onehot(system), onehot(cat_1), ...]`` (sysvi.md §1.1).

    Parameters
    ----------
    n_input
        Number of genes.
    n_batch
        Number of systems (>= 2 for the cycle loss).
    n_continuous_cov
        Number of continuous covariates.
    n_cats_per_cov
        Categories of each extra categorical covariate.
    embed_categorical_covariates
        Embed extra categorical covariates (``scvi.nn.Embedding``, names ``cov{j}``) instead of one-hot.
    prior
        ``"vamp"`` (the suite's :class:`scvi_ext.nn.VampPrior`) or ``"standard_normal"``.
    n_prior_components
        VampPrior components ``K``.
    trainable_priors
        Learn pseudo-inputs and mixture weights.
    pseudoinput_data
        Minibatch of ``K`` cells (registry tensors) initialising the pseudo-inputs; required for ``"vamp"``.
    n_latent, n_hidden, n_layers, dropout_rate
        Architecture (defaults of scvi-tools SysVI: 15, 256, 2, 0.1).
    out_var_mode
        Decoder variance ``"feature"`` (per gene) or ``"sample_feature"``.
    encoder_decoder_kwargs
        Passed to both :class:`GaussianBlock` trunks (``scvi.nn.FCLayers``).
    embedding_kwargs
        Passed to ``scvi.nn.Embedding``.
    fidelity
        ``"reference"``: numerically the forward pass of ``scvi.external.SysVI`` (cycle re-encodes the
        original-covariate reconstruction, VampPrior component std = sqrt(encoder std), the decoder std
        is used as the Gaussian NLL variance, real extra covariates in the cycle).
        ``"paper"``: the paper / research-code semantics, all four together (sysvi.md §6 A1, A2, A3, A5):
        the cycle decodes with the switched system and zeroed ("mock") extra covariates and re-encodes with
        the same, component std = encoder std, the true variance in the NLL.
    likelihood
        ``"gaussian"`` (log-normalised input, published) or ``"nb"`` (raw counts; encoder sees ``log1p``
        counts, pseudo-inputs stay >= 0 in count space, decoder = ``scvi.nn.DecoderSCVI``, per-gene
        dispersion, cycle re-encodes expected counts at the observed library size).

    Examples
    --------
    >>> module = SysVIModule(n_input=20, n_batch=2, prior="standard_normal")
    >>> module.n_latent
    15
    """

    def __init__(
        self,
        n_input: int,
        n_batch: int,
        n_continuous_cov: int = 0,
        n_cats_per_cov: list[int] | None = None,
        embed_categorical_covariates: bool = False,
        prior: Literal["standard_normal", "vamp"] = "vamp",
        n_prior_components: int = 5,
        trainable_priors: bool = True,
        pseudoinput_data: Mapping[str, torch.Tensor] | None = None,
        n_latent: int = 15,
        n_hidden: int = 256,
        n_layers: int = 2,
        dropout_rate: float = 0.1,
        out_var_mode: Literal["sample_feature", "feature"] = "feature",
        encoder_decoder_kwargs: dict | None = None,
        embedding_kwargs: dict | None = None,
        fidelity: Literal["reference", "paper"] = FIDELITY.REFERENCE,
        likelihood: Literal["gaussian", "nb"] = LIKELIHOOD.GAUSSIAN,
    ):
        super().__init__()
        if fidelity not in FIDELITY:
            raise ValueError(f"fidelity must be one of {tuple(FIDELITY)}, got {fidelity!r}.")
        if likelihood not in LIKELIHOOD:
            raise ValueError(f"likelihood must be one of {tuple(LIKELIHOOD)}, got {likelihood!r}.")
        if prior not in PRIOR_NAMES:
            raise ValueError(f"prior must be one of {tuple(PRIOR_NAMES)}, got {prior!r}.")
        self.fidelity = fidelity
        self.likelihood = likelihood
        self.n_batch = n_batch
        self.n_latent = n_latent
        self.n_input = n_input
        self.embed_categorical_covariates = embed_categorical_covariates
        encoder_decoder_kwargs = dict(encoder_decoder_kwargs or {})
        embedding_kwargs = dict(embedding_kwargs or {})

        # same construction order as scvi-tools' SysVAE, so equal seeds give equal initial weights
        n_cat_list = [n_batch]
        n_cont = n_continuous_cov
        self.n_cats_per_cov = list(n_cats_per_cov or [])
        if self.n_cats_per_cov:
            if embed_categorical_covariates:
                for j, n in enumerate(self.n_cats_per_cov):
                    name = f"{SYSVI_KEYS.EMBEDDING_PREFIX}{j}"
                    self.init_embedding(name, n, **embedding_kwargs)
                    n_cont += self.get_embedding(name).embedding_dim
            else:
                n_cat_list.extend(self.n_cats_per_cov)
        self.n_cat_list = n_cat_list
        self.n_cont = n_cont
        nb = likelihood == LIKELIHOOD.NB

        self.encoder = GaussianBlock(
            n_input=n_input,
            n_output=n_latent,
            n_cat_list=n_cat_list,
            n_cont=n_cont,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            sample=True,
            var_mode="sample_feature",
            input_transform="log1p" if nb else None,
            **encoder_decoder_kwargs,
        )
        if nb:
            self.decoder = DecoderSCVI(
                n_input=n_latent + n_cont,
                n_output=n_input,
                n_cat_list=n_cat_list,
                n_layers=n_layers,
                n_hidden=n_hidden,
                inject_covariates=True,
                use_batch_norm=encoder_decoder_kwargs.get("use_batch_norm", True),
                use_layer_norm=encoder_decoder_kwargs.get("use_layer_norm", False),
            )
            self.px_r = nn.Parameter(torch.randn(n_input))
        else:
            self.decoder = GaussianBlock(
                n_input=n_latent,
                n_output=n_input,
                n_cat_list=n_cat_list,
                n_cont=n_cont,
                n_hidden=n_hidden,
                n_layers=n_layers,
                dropout_rate=dropout_rate,
                # reference mode keeps scvi-tools' unused decoder draw (same RNG stream)
                sample=fidelity == FIDELITY.REFERENCE,
                var_mode=out_var_mode,
                **encoder_decoder_kwargs,
            )

        if prior == PRIOR_NAMES.VAMP:
            if pseudoinput_data is None:
                raise ValueError(
                    "prior='vamp' needs pseudoinput_data (a minibatch of n_prior_components cells)."
                )
            inp = self._get_inference_input(pseudoinput_data)
            cats = inp[MODULE_KEYS.CAT_COVS_KEY]
            self.prior = make_prior(
                PRIOR_NAMES.VAMP,
                n_latent=n_latent,
                n_components=n_prior_components,
                n_input=n_input,
                encoder=self.encoder,
                pseudoinput_data=inp[MODULE_KEYS.X_KEY],
                pseudoinput_covariates={
                    MODULE_KEYS.BATCH_INDEX_KEY: inp[MODULE_KEYS.BATCH_INDEX_KEY],
                    "cat_list": list(cats),
                    "cont": inp[MODULE_KEYS.CONT_COVS_KEY],
                },
                categorical_covariates={
                    MODULE_KEYS.BATCH_INDEX_KEY: n_batch,
                    "cat_list": n_cat_list[1:],
                },
                trainable_weights=True,
                trainable_pseudoinputs=trainable_priors,
                component_scale="sqrt_std" if fidelity == FIDELITY.REFERENCE else "std",
                mixture="per_dim",
                pseudoinput_transform="softplus" if nb else None,
                encode_in_eval_mode=True,
            )
        else:
            self.prior = make_prior(PRIOR_NAMES.STANDARD_NORMAL, n_latent=n_latent)

    # ------------------------------------------------------------------ inputs
    @auto_move_data
    def _get_cov(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Covariates for every layer: ``{"categorical": [(B,1), ...], "continuous": (B,C) | None}``."""
        cat_parts: list[torch.Tensor] = []
        cont_parts: list[torch.Tensor] = []
        if REGISTRY_KEYS.CONT_COVS_KEY in tensors:
            cont_parts.append(tensors[REGISTRY_KEYS.CONT_COVS_KEY])
        if REGISTRY_KEYS.CAT_COVS_KEY in tensors:
            cat = torch.split(tensors[REGISTRY_KEYS.CAT_COVS_KEY], 1, dim=1)
            if self.embed_categorical_covariates:
                for j, t in enumerate(cat):
                    cont_parts.append(self.compute_embedding(f"{SYSVI_KEYS.EMBEDDING_PREFIX}{j}", t))
            else:
                cat_parts.extend(cat)
        return {
            SYSVI_KEYS.CATEGORICAL: cat_parts,
            SYSVI_KEYS.CONTINUOUS: torch.cat(cont_parts, dim=1) if cont_parts else None,
        }

    def _get_inference_input(self, tensors: Mapping[str, torch.Tensor], **kwargs) -> dict[str, Any]:
        cov = self._get_cov(tensors=tensors)
        return {
            MODULE_KEYS.X_KEY: tensors[REGISTRY_KEYS.X_KEY],
            MODULE_KEYS.BATCH_INDEX_KEY: tensors[REGISTRY_KEYS.BATCH_KEY],
            MODULE_KEYS.CONT_COVS_KEY: cov[SYSVI_KEYS.CONTINUOUS],
            MODULE_KEYS.CAT_COVS_KEY: cov[SYSVI_KEYS.CATEGORICAL],
        }

    def _get_generative_input(
        self,
        tensors: Mapping[str, torch.Tensor],
        inference_outputs: Mapping[str, Any],
        cycle_batch: torch.Tensor | None = None,
        **kwargs,
    ) -> dict[str, Any]:
        cov = self._get_cov(tensors=tensors)
        x = tensors[REGISTRY_KEYS.X_KEY]
        library = (
            torch.log(x.sum(1, keepdim=True).clamp_min(1.0)) if self.likelihood == LIKELIHOOD.NB else None
        )
        return {
            MODULE_KEYS.Z_KEY: inference_outputs[MODULE_KEYS.Z_KEY],
            MODULE_KEYS.BATCH_INDEX_KEY: tensors[REGISTRY_KEYS.BATCH_KEY],
            SYSVI_KEYS.CYCLE_BATCH: cycle_batch,
            MODULE_KEYS.CONT_COVS_KEY: cov[SYSVI_KEYS.CONTINUOUS],
            MODULE_KEYS.CAT_COVS_KEY: cov[SYSVI_KEYS.CATEGORICAL],
            SYSVI_KEYS.LIBRARY: library,
        }

    def _mock_covariates(
        self, cont_covs: torch.Tensor | None, cat_covs: list[torch.Tensor]
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Zeroed extra covariates (all-zero one-hot rows, zero continuous values), as in the research code."""
        mock_cont = None if cont_covs is None else torch.zeros_like(cont_covs)
        mock_cat = [
            c.new_zeros((c.shape[0], n), dtype=torch.float32) if n > 1 else c
            for c, n in zip(cat_covs, self.n_cat_list[1:], strict=True)
        ]
        return mock_cont, mock_cat

    # ------------------------------------------------------------------ passes
    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        batch_index: torch.Tensor,
        cont_covs: torch.Tensor | None = None,
        cat_covs: list[torch.Tensor] | None = None,
        n_samples: int = 1,
    ) -> dict[str, Any]:
        """Expression and covariates -> posterior ``qz`` and one draw ``z``."""
        out = self.encoder(x, batch_index=batch_index, cat_list=cat_covs or [], cont=cont_covs)
        return {MODULE_KEYS.Z_KEY: out[SYSVI_KEYS.Q_SAMPLE], MODULE_KEYS.QZ_KEY: out[SYSVI_KEYS.Q_DIST]}

    def _decode(
        self,
        z: torch.Tensor,
        batch_index: torch.Tensor,
        cont_covs: torch.Tensor | None,
        cat_covs: list[torch.Tensor],
        library: torch.Tensor | None,
    ) -> Any:
        if self.likelihood == LIKELIHOOD.NB:
            zin = z if cont_covs is None else torch.cat([z, cont_covs], dim=-1)
            px_scale, _, px_rate, _ = self.decoder("gene", zin, library, batch_index, *cat_covs)
            return {"scale": px_scale, "rate": px_rate}
        return self.decoder(x=z, batch_index=batch_index, cont=cont_covs, cat_list=cat_covs)[
            SYSVI_KEYS.Q_DIST
        ]

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        batch_index: torch.Tensor,
        cont_covs: torch.Tensor | None = None,
        cat_covs: list[torch.Tensor] | None = None,
        cycle_batch: torch.Tensor | None = None,
        library: torch.Tensor | None = None,
        compute_original: bool = True,
        compute_cycle: bool = True,
    ) -> dict[str, Any]:
        """Latent and covariates -> ``px`` (and ``px_cycle`` with ``cycle_batch``)."""
        cat_covs = list(cat_covs or [])
        res: dict[str, Any] = {}
        if compute_original:
            res[SYSVI_KEYS.PX] = self._decode(z, batch_index, cont_covs, cat_covs, library)
        if compute_cycle and cycle_batch is not None:
            if self.fidelity == FIDELITY.PAPER:
                cont_covs, cat_covs = self._mock_covariates(cont_covs, cat_covs)
            res[SYSVI_KEYS.PX_CYCLE] = self._decode(z, cycle_batch, cont_covs, cat_covs, library)
        return res

    def _translated(self, generative_outputs: Mapping[str, Any]) -> torch.Tensor:
        """What the cycle re-encodes: the decoder mean in the encoder's input space (sysvi.md §6 A1)."""
        key = SYSVI_KEYS.PX if self.fidelity == FIDELITY.REFERENCE else SYSVI_KEYS.PX_CYCLE
        px = generative_outputs[key]
        return px["rate"] if self.likelihood == LIKELIHOOD.NB else px.loc

    def random_select_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """Per cell, a system drawn uniformly among the other systems (``(B, 1)`` codes).

        Parameters
        ----------
        batch
            System codes ``(B, 1)``.

        Returns
        -------
        torch.Tensor
            ``(B, 1)`` long codes, never equal to ``batch``.
        """
        return random_other_category(batch.long(), self.n_batch)

    @auto_move_data
    def forward(
        self,
        tensors: dict[str, torch.Tensor],
        get_inference_input_kwargs: dict | None = None,
        get_generative_input_kwargs: dict | None = None,
        inference_kwargs: dict | None = None,
        generative_kwargs: dict | None = None,
        loss_kwargs: dict | None = None,
        compute_loss: bool = True,
        cycle_batch: torch.Tensor | None = None,
    ):
        """Encoder -> decoder -> (cycle: decoder with another system -> encoder) -> loss.

        Parameters
        ----------
        tensors
            Registry tensors of a minibatch.
        get_inference_input_kwargs, get_generative_input_kwargs, inference_kwargs, generative_kwargs
            Passed to the respective steps.
        loss_kwargs
            Passed to :meth:`loss`; ``z_distance_cycle_weight=0`` skips the cycle passes.
        compute_loss
            Also return the :class:`~scvi.module.base.LossOutput`.
        cycle_batch
            Fixed ``(B, 1)`` cycle systems (tests); ``None`` draws them.

        Returns
        -------
        tuple
            ``(inference_outputs, generative_outputs[, loss_output])``.
        """
        inference_kwargs = inference_kwargs or {}
        generative_kwargs = generative_kwargs or {}
        loss_kwargs = loss_kwargs or {}
        get_inference_input_kwargs = get_inference_input_kwargs or {}
        get_generative_input_kwargs = get_generative_input_kwargs or {}

        inf_in = self._get_inference_input(tensors, **get_inference_input_kwargs)
        inference_outputs = self.inference(**inf_in, **inference_kwargs)
        compute_cycle = loss_kwargs.get(LOSS_NAMES.CYCLE_WEIGHT_KWARG, 2.0) != 0 and self.n_batch > 1
        if cycle_batch is None:
            cycle_batch = (
                self.random_select_batch(tensors[REGISTRY_KEYS.BATCH_KEY]) if self.n_batch > 1 else None
            )
        gen_in = self._get_generative_input(
            tensors, inference_outputs, cycle_batch=cycle_batch, **get_generative_input_kwargs
        )
        generative_outputs = self.generative(
            **gen_in, compute_original=True, compute_cycle=compute_cycle, **generative_kwargs
        )
        if compute_cycle:
            cont, cats = inf_in[MODULE_KEYS.CONT_COVS_KEY], inf_in[MODULE_KEYS.CAT_COVS_KEY]
            if self.fidelity == FIDELITY.PAPER:
                cont, cats = self._mock_covariates(cont, cats)
            cyc = self.inference(
                x=self._translated(generative_outputs),
                batch_index=cycle_batch,
                cont_covs=cont,
                cat_covs=cats,
                **inference_kwargs,
            )
            inference_outputs[SYSVI_KEYS.QZ_CYCLE] = cyc[MODULE_KEYS.QZ_KEY]
        if not compute_loss:
            return inference_outputs, generative_outputs
        losses = self.loss(
            tensors, inference_outputs, generative_outputs, compute_cycle=compute_cycle, **loss_kwargs
        )
        return inference_outputs, generative_outputs, losses

    def reconstruction_loss(self, x: torch.Tensor, px: Any) -> torch.Tensor:
        """Per-cell negative log-likelihood (summed over genes).

        Parameters
        ----------
        x
            Observed data ``(B, G)``.
        px
            Decoder output (a Normal, or the NB dict).

        Returns
        -------
        torch.Tensor
            ``(B,)``.
        """
        if self.likelihood == LIKELIHOOD.NB:
            return -nb_log_prob(x, px["rate"], torch.exp(self.px_r)).sum(-1)
        # reference: scvi-tools passes the std as the variance (A3); paper: the true variance
        var = px.scale if self.fidelity == FIDELITY.REFERENCE else px.scale.pow(2)
        return F.gaussian_nll_loss(px.loc, x, var, reduction="none").sum(dim=1)

    def loss(
        self,
        tensors: Mapping[str, torch.Tensor],
        inference_outputs: Mapping[str, Any],
        generative_outputs: Mapping[str, Any],
        kl_weight: float = 1.0,
        reconstruction_weight: float = 1.0,
        z_distance_cycle_weight: float = 2.0,
        compute_cycle: bool = True,
    ) -> LossOutput:
        """``mean(w_rec * rec + w_kl * KL + w_cyc * cyc)``; the cycle term is the ``cycle_loss`` metric.

        Parameters
        ----------
        tensors, inference_outputs, generative_outputs
            From :meth:`forward`.
        kl_weight, reconstruction_weight, z_distance_cycle_weight
            Term weights (the plan passes ``kl_weight`` and ``z_distance_cycle_weight``).
        compute_cycle
            Whether the cycle pass ran.

        Returns
        -------
        scvi.module.base.LossOutput
        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        rec = self.reconstruction_loss(x, generative_outputs[SYSVI_KEYS.PX])
        qz, z = inference_outputs[MODULE_KEYS.QZ_KEY], inference_outputs[MODULE_KEYS.Z_KEY]
        kl = self.prior.kl(qz, z)
        if z_distance_cycle_weight > 0 and SYSVI_KEYS.QZ_CYCLE in inference_outputs:
            cyc = cycle_latent_distance(qz.loc, inference_outputs[SYSVI_KEYS.QZ_CYCLE].loc)
            if SYSVI_KEYS.BATCH_WEIGHTS in tensors:
                cyc = cyc * tensors[SYSVI_KEYS.BATCH_WEIGHTS].flatten()
        else:
            cyc = torch.zeros_like(rec)
        loss = rec * reconstruction_weight + kl * kl_weight + cyc * z_distance_cycle_weight
        return LossOutput(
            loss=loss.mean(),
            reconstruction_loss=rec,
            kl_local=kl,
            extra_metrics={LOSS_NAMES.CYCLE: cyc.mean()},
        )

    @torch.inference_mode()
    def sample(self, *args, **kwargs):
        """Not implemented: decoded expression is not recommended for sysVI (as in scvi-tools).

        Raises
        ------
        NotImplementedError
        """
        raise NotImplementedError("Sampling decoded expression is not supported for SysVI.")


def convert_reference_state_dict(
    reference_state: Mapping[str, torch.Tensor], n_cat_covs: int | None = None
) -> dict[str, torch.Tensor]:
    """Translate a ``scvi.external.sysvi.SysVAE`` state dict into :class:`SysVIModule` keys.

    Encoder/decoder/embedding keys are identical; the VampPrior's ``u_cat.{j}`` become
    ``u_cat__batch_index__0`` / ``u_cat__cat_list__{j-1}``, ``u_cont`` becomes ``u_cont.cont``, ``w`` is
    flattened from ``(K, 1, 1)`` to ``(K,)`` and the duplicated ``prior.encoder.*`` entries are dropped.

    Parameters
    ----------
    reference_state
        ``scvi_model.module.state_dict()`` of a scvi-tools SysVI model.
    n_cat_covs
        Unused (kept for signature stability).

    Returns
    -------
    dict
        A state dict for ``SysVIModule(fidelity="reference")``.

    Examples
    --------
    >>> convert_reference_state_dict({"prior.w": torch.zeros(3, 1, 1)})["prior.w"].shape
    torch.Size([3])
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in reference_state.items():
        if key.startswith("prior.encoder."):
            continue
        if key.startswith("prior.u_cat."):
            j = int(key.rsplit(".", 1)[1])
            new = "prior.u_cat__batch_index__0" if j == 0 else f"prior.u_cat__cat_list__{j - 1}"
            out[new] = value
        elif key == "prior.u_cont":
            out["prior.u_cont.cont"] = value
        elif key == "prior.w":
            out[key] = value.reshape(-1)
        else:
            out[key] = value
    return out
