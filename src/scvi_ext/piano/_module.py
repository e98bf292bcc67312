"""PIANO's torch module: covariate-free encoder, covariate-conditioned decoder and the NB-GLM output layer."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal, kl_divergence

from ..nn import grad_reverse
from ._constants import DISTRIBUTIONS, PARAMETERIZATIONS
from ._constants import PIANO_DEFAULTS as D

_LOG_MU_MIN = math.log(D.MU_MIN)
_LOG_MU_MAX = math.log(D.MU_MAX)
_LOG_RHO_FLOOR = math.log(D.RHO_FLOOR)


def _mlp(
    n_in: int, n_hidden: int, n_layers: int, dropout: float, bn_eps: float, bn_momentum: float
) -> nn.Sequential:
    """``n_layers`` blocks of Linear -> BatchNorm1d -> ReLU -> Dropout (piano.md §1.2); first block maps n_in->n_hidden."""
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers += [
            nn.Linear(n_in if i == 0 else n_hidden, n_hidden),
            nn.BatchNorm1d(n_hidden, eps=bn_eps, momentum=bn_momentum),
            nn.ReLU(),
            nn.Dropout(p=dropout),
        ]
    return nn.Sequential(*layers)


def nb_log_prob_xi_psi(
    x: torch.Tensor, xi: torch.Tensor, psi: torch.Tensor, sparse: bool = False
) -> torch.Tensor:
    """Per-cell NB log-likelihood ``sum_g log NB(x_g; total_count=xi_g, logits=psi_g)`` (piano.md §1.4).

    ``log p = lgamma(x+xi) - lgamma(xi) - lgamma(x+1) + xi*logsigmoid(-psi) + x*logsigmoid(psi)``, the
    parametrisation of ``torch.distributions.NegativeBinomial``. With ``sparse=True`` the three ``lgamma`` terms
    (which cancel exactly where ``x == 0``) are evaluated on the non-zero entries only: the same value, much
    less work on sparse count data, but data-dependent shapes (so not used under ``torch.compile``).

    Parameters
    ----------
    x
        Counts ``[B, G]``.
    xi
        ``total_count`` ``[B, G]`` (> 0).
    psi
        Log-odds ``[B, G]``.
    sparse
        Evaluate the ``lgamma`` terms on non-zero counts only.

    Returns
    -------
    torch.Tensor
        ``[B]`` log-likelihood per cell.

    Examples
    --------
    >>> x = torch.tensor([[0.0, 3.0]])
    >>> nb_log_prob_xi_psi(x, torch.ones(1, 2), torch.zeros(1, 2)).shape
    torch.Size([1])
    """
    dense = xi * F.logsigmoid(-psi) + x * F.logsigmoid(psi)
    if not sparse:
        lg = torch.lgamma(x + xi) - torch.lgamma(xi) - torch.lgamma(x + 1.0)
        return (dense + lg).sum(-1)
    out = dense.sum(-1)
    G = x.shape[-1]
    flat_x = x.reshape(-1)
    nz = torch.nonzero(flat_x, as_tuple=True)[0]
    xv = flat_x.index_select(0, nz)
    xiv = xi.reshape(-1).index_select(0, nz)
    lg = torch.lgamma(xv + xiv) - torch.lgamma(xiv) - torch.lgamma(xv + 1.0)
    rows = torch.div(nz, G, rounding_mode="floor")
    return out.reshape(-1).index_add(0, rows, lg).reshape(out.shape)


class _SparseNBLogLik(torch.autograd.Function):
    """Per-cell NB log-likelihood in ``(log xi, psi)`` with hand-written backward; lgamma/digamma on non-zeros."""

    @staticmethod
    def forward(
        ctx, log_xi: torch.Tensor, psi: torch.Tensor, x: torch.Tensor, lgamma_x1: torch.Tensor | None
    ) -> torch.Tensor:
        xi = torch.exp(log_xi)
        ls_neg = F.logsigmoid(-psi)
        ls_pos = F.logsigmoid(psi)
        ll = (xi * ls_neg + x * ls_pos).sum(-1)
        G = x.shape[-1]
        nz = torch.nonzero(x.reshape(-1) > 0, as_tuple=True)[0]
        xv = x.reshape(-1).index_select(0, nz)
        xiv = xi.reshape(-1).index_select(0, nz)
        lg = torch.lgamma(xv + xiv) - torch.lgamma(xiv)
        if lgamma_x1 is None:
            lg = lg - torch.lgamma(xv + 1.0)
        else:  # per-cell sum_g lgamma(x_g + 1), precomputed once for the whole data set
            ll = ll - lgamma_x1
        rows = torch.div(nz, G, rounding_mode="floor")
        ll = ll.index_add(0, rows, lg)
        ctx.save_for_backward(xi, ls_neg, ls_pos, x, nz, xv, xiv)
        return ll

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        xi, ls_neg, ls_pos, x, nz, xv, xiv = ctx.saved_tensors
        g = grad_out.unsqueeze(-1)
        # d ll / d log xi = xi * (logsigmoid(-psi) + [x > 0] (digamma(x + xi) - digamma(xi)))
        d_log_xi = xi * ls_neg
        d_log_xi.reshape(-1).index_add_(0, nz, xiv * (torch.digamma(xv + xiv) - torch.digamma(xiv)))
        # d ll / d psi (xi fixed) = -xi sigmoid(psi) + x sigmoid(-psi)
        d_psi = x * torch.exp(ls_neg) - xi * torch.exp(ls_pos)
        return g * d_log_xi, g * d_psi, None, None


def nb_log_prob_log_xi_psi(
    log_xi: torch.Tensor, psi: torch.Tensor, x: torch.Tensor, lgamma_x1: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-cell NB log-likelihood from ``log xi`` (fast, exact): lgamma/digamma only where ``x > 0``.

    Same value and gradients as :func:`nb_log_prob_xi_psi` with ``xi = exp(log_xi)``; the backward is written
    by hand (fewer passes over the ``[B, G]`` tensors than autograd's graph). Data-dependent shapes: not for
    ``torch.compile``.

    Parameters
    ----------
    log_xi
        ``[B, G]`` log total_count.
    psi
        ``[B, G]`` log-odds.
    x
        ``[B, G]`` counts.
    lgamma_x1
        Optional precomputed ``[B]`` per-cell ``sum_g lgamma(x_g + 1)`` (a constant of the data).

    Returns
    -------
    torch.Tensor
        ``[B]`` log-likelihood per cell.

    Examples
    --------
    >>> nb_log_prob_log_xi_psi(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[0.0, 3.0]])).shape
    torch.Size([1])
    """
    return _SparseNBLogLik.apply(log_xi, psi, x, lgamma_x1)


def zinb_log_prob_xi_psi(
    x: torch.Tensor, xi: torch.Tensor, psi: torch.Tensor, gate_logits: torch.Tensor
) -> torch.Tensor:
    """Per-cell zero-inflated NB log-likelihood with NB part ``(xi, psi)`` and gate ``sigmoid(gate_logits)``.

    Parameters
    ----------
    x, xi, psi
        As :func:`nb_log_prob_xi_psi`.
    gate_logits
        Logits of the zero-inflation probability ``[B, G]``.

    Returns
    -------
    torch.Tensor
        ``[B]`` log-likelihood per cell.

    Examples
    --------
    >>> x = torch.tensor([[0.0, 3.0]])
    >>> zinb_log_prob_xi_psi(x, torch.ones(1, 2), torch.zeros(1, 2), torch.zeros(1, 2)).shape
    torch.Size([1])
    """
    log_nb0 = xi * F.logsigmoid(-psi)
    log_nb = torch.lgamma(x + xi) - torch.lgamma(xi) - torch.lgamma(x + 1.0) + log_nb0 + x * F.logsigmoid(psi)
    soft = F.softplus(gate_logits)
    case_zero = torch.logaddexp(gate_logits, log_nb0) - soft
    case_nonzero = log_nb - soft
    return torch.where(x == 0, case_zero, case_nonzero).sum(-1)


class PIANOModule(BaseModuleClass):
    """PIANO's VAE: covariate-free encoder, decoder with covariates in its first layer, NB-GLM output layer.

    Generative model (piano.md §1.3–1.4): ``rho = softmax(dec(z, c))``;
    ``log mu = clip(b_mu + w_rho log rho + w_lib log max(l, 200) + c W_mu)``; ``psi = clip(b_psi + c W_psi)``;
    ``x ~ NB(total_count = mu e^-psi, logits = psi)``, so ``E[x] = mu`` and ``Var[x] = mu (1 + e^psi)``.

    Per-category weights are kept as one tensor per categorical key with the categories on the **last**
    dimension (``decoder_cov_cat[k]``: ``[H, n_k]``, ``glm_w_mu_cat[k]`` / ``glm_w_psi_cat[k]``: ``[G, n_k]``) so
    scvi's :meth:`~scvi.model.base.ArchesMixin.load_query_data` pads new categories in place (§5.2).

    Parameters
    ----------
    n_input
        Number of genes ``G``.
    n_cats_per_key
        Number of categories of each categorical key, in covariate order (batch first when used).
    n_continuous
        Number of continuous covariates.
    unlabeled_codes
        Per categorical key, the integer code whose one-hot block is all zeros (the "Unknown" value), or -1.
    n_hidden, n_latent, n_layers, dropout_rate
        Architecture (defaults 256 / 32 / 3 / 0.1, §1.6).
    distribution
        ``"nb"`` (published) or ``"zinb"`` (extra gate head on the last decoder layer).
    parameterization
        ``"ksi-psi"`` (the NB-GLM, published) or ``"mu-theta"`` (``mu = l rho``, ``log theta`` a covariate GLM).
    adversarial
        Add a gradient-reversal classifier of the categorical covariates from ``z`` (not in the paper).
    scale_continuous
        z-score continuous covariates with the training statistics ``cont_mean`` / ``cont_std``.
    cont_mean, cont_std
        Training mean / s.d. of the continuous covariates (stored as buffers, reused for queries).
    bn_eps, bn_momentum, var_eps
        BatchNorm settings and posterior s.d. floor.

    Examples
    --------
    >>> m = PIANOModule(n_input=50, n_cats_per_key=[3, 2], n_continuous=1)
    >>> m.n_covariates
    6
    """

    def __init__(
        self,
        n_input: int,
        n_cats_per_key: Sequence[int] = (),
        n_continuous: int = 0,
        unlabeled_codes: Sequence[int] | None = None,
        n_hidden: int = D.N_HIDDEN,
        n_latent: int = D.N_LATENT,
        n_layers: int = D.N_LAYERS,
        dropout_rate: float = D.DROPOUT,
        distribution: str = "nb",
        parameterization: str = "ksi-psi",
        adversarial: bool = False,
        scale_continuous: bool = True,
        cont_mean: Sequence[float] | None = None,
        cont_std: Sequence[float] | None = None,
        bn_eps: float = D.BN_EPS,
        bn_momentum: float = D.BN_MOMENTUM,
        var_eps: float = D.VAR_EPS,
    ):
        super().__init__()
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}.")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}."
            )
        self.n_input = int(n_input)
        self.n_cats_per_key = [int(n) for n in n_cats_per_key]
        self.n_continuous = int(n_continuous)
        self.n_latent = int(n_latent)
        self.distribution = distribution
        self.parameterization = parameterization
        self.adversarial = bool(adversarial)
        self.scale_continuous = bool(scale_continuous)
        self.var_eps = float(var_eps)
        codes = list(unlabeled_codes) if unlabeled_codes is not None else [-1] * len(self.n_cats_per_key)
        if len(codes) != len(self.n_cats_per_key):
            raise ValueError("unlabeled_codes must have one entry per categorical key.")
        self.register_buffer("unlabeled_codes", torch.tensor(codes, dtype=torch.long), persistent=False)
        mean = (
            torch.zeros(self.n_continuous)
            if cont_mean is None
            else torch.as_tensor(cont_mean, dtype=torch.float32)
        )
        std = (
            torch.ones(self.n_continuous)
            if cont_std is None
            else torch.as_tensor(cont_std, dtype=torch.float32)
        )
        self.register_buffer("cont_mean", mean.clone())
        self.register_buffer("cont_std", std.clone())
        # final KL weight of the reference training run, reused by query training (§5.4)
        self.register_buffer("kl_weight_final", torch.tensor(float("nan")))
        G, H, P = self.n_input, int(n_hidden), self.n_covariates

        # inference network (§1.2): covariate-free
        self.encoder = _mlp(G, H, n_layers, dropout_rate, bn_eps, bn_momentum)
        self.mean_encoder = nn.Linear(H, n_latent)
        self.var_encoder = nn.Linear(H, n_latent)

        # generative network (§1.3): covariates enter only the first decoder layer, one tensor per key
        bound = 1.0 / math.sqrt(n_latent + P)  # nn.Linear's init for a single Linear(D + P, H)
        self.decoder_z = nn.Linear(n_latent, H)
        nn.init.uniform_(self.decoder_z.weight, -bound, bound)
        nn.init.uniform_(self.decoder_z.bias, -bound, bound)
        self.decoder_cov_cat = nn.ParameterList(
            [nn.Parameter(torch.empty(H, n).uniform_(-bound, bound)) for n in self.n_cats_per_key]
        )
        self.decoder_cov_cont = nn.Parameter(torch.empty(H, self.n_continuous).uniform_(-bound, bound))
        first = _mlp(H, H, n_layers, dropout_rate, bn_eps, bn_momentum)
        self.decoder_first = nn.Sequential(*list(first)[1:4])  # BN -> ReLU -> Dropout after the split Linear
        self.decoder = nn.Sequential(*list(first)[4:])
        self.px_rho_decoder = nn.Linear(H, G)
        self.px_gate_decoder = nn.Linear(H, G) if distribution == "zinb" else None

        # NB-GLM output layer (§1.4), init b_mu = w_rho = w_lib = b_psi = 1, W = 0
        self.glm_b_mu = nn.Parameter(torch.ones(G))
        self.glm_w_rho = nn.Parameter(torch.ones(G))
        self.glm_w_lib = nn.Parameter(torch.ones(G))
        self.glm_w_mu_cat = nn.ParameterList([nn.Parameter(torch.zeros(G, n)) for n in self.n_cats_per_key])
        self.glm_w_mu_cont = nn.Parameter(torch.zeros(G, self.n_continuous))
        if parameterization == "mu-theta":  # the mean GLM is unused: do not create it
            for p in [self.glm_b_mu, self.glm_w_rho, self.glm_w_lib, self.glm_w_mu_cont, *self.glm_w_mu_cat]:
                p.requires_grad_(False)
        # psi (ksi-psi) or log theta (mu-theta): per-gene bias + covariate GLM
        self.glm_b_psi = nn.Parameter(torch.ones(G))
        self.glm_w_psi_cat = nn.ParameterList([nn.Parameter(torch.zeros(G, n)) for n in self.n_cats_per_key])
        self.glm_w_psi_cont = nn.Parameter(torch.zeros(G, self.n_continuous))

        self.n_cat_total = int(sum(self.n_cats_per_key))
        if self.adversarial:
            if self.n_cat_total == 0:
                raise ValueError("adversarial=True needs at least one categorical covariate.")
            self.classifier = nn.Sequential(nn.Linear(n_latent, H), nn.ReLU(), nn.Linear(H, self.n_cat_total))
        else:
            self.classifier = None
        self.sparse_nll = True  # lgamma on non-zeros only; turned off under torch.compile

    @property
    def n_covariates(self) -> int:
        """Width ``P`` of the covariate vector (categorical blocks + continuous columns)."""
        return int(sum(self.n_cats_per_key)) + self.n_continuous

    # ------------------------------------------------------------------ covariates
    def covariates_from_tensors(self, tensors: dict[str, torch.Tensor], include_batch: bool) -> torch.Tensor:
        """Build the ``[B, P]`` covariate matrix from registry tensors (codes -> masked one-hot, z-scored cont).

        Parameters
        ----------
        tensors
            Minibatch from an scvi data loader.
        include_batch
            Whether the batch key is the first categorical block.

        Returns
        -------
        torch.Tensor
            Covariates, float32.
        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        codes = []
        if include_batch:
            codes.append(tensors[REGISTRY_KEYS.BATCH_KEY].reshape(-1, 1))
        if tensors.get(REGISTRY_KEYS.CAT_COVS_KEY) is not None:
            codes.append(tensors[REGISTRY_KEYS.CAT_COVS_KEY])
        cont = tensors.get(REGISTRY_KEYS.CONT_COVS_KEY)
        codes_t = torch.cat(codes, dim=1).long() if codes else torch.zeros(x.shape[0], 0, dtype=torch.long)
        return self.covariates_from_codes(codes_t.to(x.device), None if cont is None else cont.to(x.device))

    def covariates_from_codes(self, codes: torch.Tensor, cont: torch.Tensor | None) -> torch.Tensor:
        """Masked one-hot blocks of the ``[B, K]`` category codes followed by the (scaled) continuous values.

        Parameters
        ----------
        codes
            Integer codes, one column per categorical key.
        cont
            ``[B, n_continuous]`` raw continuous values, or ``None``.

        Returns
        -------
        torch.Tensor
            ``[B, P]`` float32 covariates.
        """
        if codes.shape[1] != len(self.n_cats_per_key):
            raise ValueError(
                f"Expected {len(self.n_cats_per_key)} categorical covariate columns, got {codes.shape[1]}."
            )
        blocks = []
        for k, n in enumerate(self.n_cats_per_key):
            c = codes[:, k]
            oh = F.one_hot(c.clamp(0, n - 1), n).float()
            keep = (c != self.unlabeled_codes[k].to(c.device)).float().unsqueeze(1)
            blocks.append(oh * keep)
        if self.n_continuous:
            v = cont.float()
            if self.scale_continuous:
                v = (v - self.cont_mean) / self.cont_std
            blocks.append(v)
        if not blocks:
            return torch.zeros(codes.shape[0], 0, device=codes.device)
        return torch.cat(blocks, dim=1)

    def _cov_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Concatenated ``[H, P]`` decoder and ``[G, P]`` GLM covariate weights (one matmul each)."""
        dec = torch.cat([*self.decoder_cov_cat, self.decoder_cov_cont], dim=1)
        w_mu = torch.cat([*self.glm_w_mu_cat, self.glm_w_mu_cont], dim=1)
        w_psi = torch.cat([*self.glm_w_psi_cat, self.glm_w_psi_cont], dim=1)
        return dec, w_mu, w_psi

    # ------------------------------------------------------------------ scvi module API
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        x = tensors[REGISTRY_KEYS.X_KEY]
        return {
            "z": inference_outputs["z"],
            "library": x.sum(1, keepdim=True),
            "cov": self.covariates_from_tensors(tensors, include_batch=self._include_batch),
        }

    _include_batch: bool = False  # set by the model from the registry

    @auto_move_data
    def inference(self, x: torch.Tensor, n_samples: int = 1) -> dict[str, torch.Tensor | Normal]:
        """Encoder (§1.2): ``q(z | x) = N(mu_z, sigma_z^2)`` from ``log1p(x)``; no covariates, no library."""
        h = self.encoder(torch.log1p(x))
        qm = self.mean_encoder(h)
        qs = torch.clamp(torch.exp(0.5 * self.var_encoder(h)), min=self.var_eps)
        qz = Normal(qm, qs)
        z = qz.rsample() if n_samples == 1 else qz.rsample((n_samples,))
        return {"qz": qz, "z": z}

    def _decode(self, z: torch.Tensor, cov: torch.Tensor, library: torch.Tensor):
        """Return (log rho, log mu, log xi, psi, gate_logits) for 2-D ``z``."""
        w_dec, w_mu, w_psi = self._cov_weights()
        h = self.decoder_z(z)
        if cov.shape[1]:
            h = h + cov @ w_dec.T
        h = self.decoder(self.decoder_first(h))
        log_rho = torch.clamp(F.log_softmax(self.px_rho_decoder(h), dim=-1), min=_LOG_RHO_FLOOR)
        has_cov = cov.shape[1] > 0
        if self.parameterization == "ksi-psi":
            log_lib = torch.log(torch.clamp(library, min=D.LIB_FLOOR))
            eta = self.glm_b_mu + self.glm_w_rho * log_rho + log_lib * self.glm_w_lib
            if has_cov:
                eta = eta + cov @ w_mu.T
            # clip(exp(clip(eta, -20, 20)), 1e-8, 2e4) == exp(clip(eta, log 1e-8, log 2e4)), gradients included
            log_mu = torch.clamp(eta, _LOG_MU_MIN, _LOG_MU_MAX)
            psi = self.glm_b_psi + cov @ w_psi.T if has_cov else self.glm_b_psi.expand_as(log_mu)
            psi = torch.clamp(psi, -D.PSI_CLIP, D.PSI_CLIP)
            log_xi = log_mu - psi
        else:  # mu-theta: mu = max(l rho, 1e-8); log theta = GLM of the covariates
            log_mu = torch.clamp(torch.log(library) + log_rho, min=_LOG_MU_MIN)
            log_theta = self.glm_b_psi + cov @ w_psi.T if has_cov else self.glm_b_psi.expand_as(log_mu)
            log_theta = torch.clamp(
                torch.clamp(log_theta, -D.PSI_CLIP, D.PSI_CLIP), math.log(1e-8), math.log(1e8)
            )
            log_xi = log_theta
            psi = log_mu - log_theta
        gate = None
        if self.px_gate_decoder is not None:
            gate = torch.clamp(self.px_gate_decoder(h), -D.ETA_CLIP, D.ETA_CLIP)
        return log_rho, log_mu, log_xi, psi, gate

    @auto_move_data
    @property
    def gene_likelihood(self) -> str:
        """``"nb"`` or ``"zinb"`` (the name scvi's ``RNASeqMixin`` reads)."""
        return self.distribution

    def generative(
        self, z: torch.Tensor, library: torch.Tensor, cov: torch.Tensor, transform_batch: int | None = None
    ) -> dict:
        """Decoder + NB-GLM (§1.3–1.4). Returns ``rho``, ``mu``, ``psi``, ``xi`` and the distribution ``px``.

        ``transform_batch`` (a batch code) replaces every cell's batch block by that batch's one-hot, the
        counterfactual that scvi's ``RNASeqMixin`` asks for; it needs the batch key among the covariates.
        """
        if transform_batch is not None:
            if not self._include_batch:
                raise ValueError(
                    "transform_batch needs a model set up with batch_key (the batch is a covariate)."
                )
            n_b = int(self.n_cats_per_key[0])
            code = int(transform_batch)
            if not 0 <= code < n_b:
                raise ValueError(f"transform_batch code {code} is not a batch code (0..{n_b - 1}).")
            cov = cov.clone()
            cov[:, :n_b] = 0.0
            cov[:, code] = 1.0
        shape = z.shape[:-1]
        if z.dim() == 3:  # n_samples > 1
            S = z.shape[0]
            z = z.reshape(-1, z.shape[-1])
            cov = cov.repeat(S, 1)
            library = library.repeat(S, 1)
        log_rho, log_mu, log_xi, psi, gate = self._decode(z, cov, library)
        out_shape = (*shape, self.n_input)
        rho, mu = torch.exp(log_rho).reshape(out_shape), torch.exp(log_mu).reshape(out_shape)
        log_xi, psi = log_xi.reshape(out_shape), psi.reshape(out_shape)
        xi = torch.exp(log_xi)
        if gate is None:
            px = NegativeBinomial(total_count=xi, logits=psi, validate_args=False)
        else:
            gate = gate.reshape(out_shape)
            px = ZeroInflatedNegativeBinomial(mu=mu, theta=xi, zi_logits=gate, validate_args=False)
        return {"rho": rho, "mu": mu, "psi": psi, "xi": xi, "log_xi": log_xi, "gate_logits": gate, "px": px}

    def log_likelihood(
        self,
        x: torch.Tensor,
        log_xi: torch.Tensor,
        psi: torch.Tensor,
        gate: torch.Tensor | None,
        lgamma_x1: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-cell log-likelihood of counts ``x`` under the output distribution."""
        if gate is not None:
            return zinb_log_prob_xi_psi(x, torch.exp(log_xi), psi, gate)
        if self.sparse_nll:
            return nb_log_prob_log_xi_psi(log_xi, psi, x, lgamma_x1)
        return nb_log_prob_xi_psi(x, torch.exp(log_xi), psi)

    def _adversarial_loss(self, z: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(grad_reverse(z, 1.0))
        target = cov[:, : self.n_cat_total]
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float | torch.Tensor = 1.0,
    ) -> LossOutput:
        """``mean_n(nll_n + beta kl_n) [+ mean_n adv_n]`` (§1.5, scvi per-cell convention)."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        nll = -self.log_likelihood(
            x, generative_outputs["log_xi"], generative_outputs["psi"], generative_outputs["gate_logits"]
        )
        qz = inference_outputs["qz"]
        kl = kl_divergence(qz, Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))).sum(-1)
        loss = torch.mean(nll + kl_weight * kl)
        extra = {}
        if self.classifier is not None:
            cov = self.covariates_from_tensors(tensors, include_batch=self._include_batch)
            adv = self._adversarial_loss(inference_outputs["z"], cov)
            loss = loss + adv.mean()
            extra["adv"] = adv.mean()
        return LossOutput(
            loss=loss, reconstruction_loss=nll, kl_local={"kl_divergence_z": kl}, extra_metrics=extra
        )

    def fast_loss(
        self,
        x: torch.Tensor,
        cov: torch.Tensor,
        kl_weight: torch.Tensor,
        lgamma_x1: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The training objective on dense tensors (the fast loop's step, §2.2), same value as :meth:`loss`.

        Parameters
        ----------
        x
            ``[B, G]`` float counts.
        cov
            ``[B, P]`` covariates.
        kl_weight
            0-dim tensor ``beta``.
        lgamma_x1
            Optional precomputed per-cell ``sum_g lgamma(x_g + 1)``.

        Returns
        -------
        tuple
            ``(loss, nll_sum, kl_sum, adv_sum)`` over the minibatch (sums are detached).
        """
        h = self.encoder(torch.log1p(x))
        qm = self.mean_encoder(h)
        qs = torch.clamp(torch.exp(0.5 * self.var_encoder(h)), min=self.var_eps)
        z = qm + qs * torch.randn_like(qm)
        library = x.sum(1, keepdim=True)
        _, _, log_xi, psi, gate = self._decode(z, cov, library)
        nll = -self.log_likelihood(x, log_xi, psi, gate, lgamma_x1)
        kl = 0.5 * (qm.pow(2) + qs.pow(2) - 1.0).sum(-1) - torch.log(qs).sum(-1)
        loss = torch.mean(nll + kl_weight * kl)
        if self.classifier is not None:
            adv = self._adversarial_loss(z, cov)
            loss = loss + adv.mean()
            adv_sum = adv.detach().sum()
        else:
            adv_sum = torch.zeros((), device=x.device)
        return loss, nll.detach().sum(), kl.detach().sum(), adv_sum

    @torch.inference_mode()
    def sample(
        self, tensors: dict[str, torch.Tensor], n_samples: int = 1, generative_kwargs: dict | None = None
    ) -> torch.Tensor:
        """Draw counts from ``px`` for the cells of ``tensors``: ``[B, G]``, or ``[B, G, n_samples]`` (scvi's layout).

        ``generative_kwargs`` (e.g. ``{"transform_batch": code}``) go to :meth:`generative`.
        """
        _, gen = self.forward(tensors, generative_kwargs=generative_kwargs, compute_loss=False)
        s = gen["px"].sample((n_samples,)).cpu()
        return s[0] if n_samples == 1 else s.permute(1, 2, 0)
