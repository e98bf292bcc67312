"""Latent priors with one interface: standard normal and VampPrior (mixture of encoded pseudo-inputs).

Every prior exposes ``log_prob(z) -> (...,)`` (summed over latent dimensions) and
``kl(qz, z) -> (...,)`` so a module can switch priors by name via :func:`make_prior`.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence


class _PriorNames(NamedTuple):
    STANDARD_NORMAL: str = "standard_normal"
    VAMP: str = "vamp"


PRIOR_NAMES = _PriorNames()
"""Names accepted by :func:`make_prior`."""

_MIXTURES = ("per_dim", "joint")
_COMPONENT_SCALES = ("std", "sqrt_std")
_TRANSFORMS = (None, "softplus")


class LatentPrior(nn.Module, ABC):
    """Base class of latent priors.

    Subclasses implement :meth:`log_prob`; :meth:`kl` defaults to the single-sample Monte-Carlo
    estimate ``log q(z|x) - log p(z)`` with the reparameterised draw ``z``.

    Examples
    --------
    >>> prior = StandardNormalPrior()
    >>> prior.log_prob(torch.zeros(2, 3)).shape
    torch.Size([2])
    """

    @abstractmethod
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log density of ``z`` under the prior, summed over the last (latent) dimension.

        Parameters
        ----------
        z
            Latent samples, shape ``(..., n_latent)``.

        Returns
        -------
        torch.Tensor
            Shape ``(...,)``.
        """

    def kl(self, qz: Normal, z: torch.Tensor) -> torch.Tensor:
        """Single-sample Monte-Carlo KL: ``log q(z|x) - log p(z)`` summed over latent dimensions.

        Parameters
        ----------
        qz
            Posterior, a diagonal :class:`torch.distributions.Normal` with ``loc`` of shape ``(N, L)``.
        z
            Reparameterised sample from ``qz``, shape ``(N, L)`` (or ``(S, N, L)``).

        Returns
        -------
        torch.Tensor
            Per-cell KL estimate, shape ``z.shape[:-1]``.
        """
        if z is None:
            raise ValueError("z (a sample from qz) is required for the Monte-Carlo KL of this prior.")
        return qz.log_prob(z).sum(-1) - self.log_prob(z)


class StandardNormalPrior(LatentPrior):
    """Isotropic standard normal prior ``N(0, I)``.

    Parameters
    ----------
    n_latent
        Latent dimension (optional; only used to validate inputs).
    analytic_kl
        If ``True`` (default), :meth:`kl` is the closed form ``KL(q || N(0, I))`` and ``z`` is ignored;
        otherwise the Monte-Carlo estimate of :class:`LatentPrior` is used.

    Examples
    --------
    >>> prior = StandardNormalPrior(n_latent=2)
    >>> qz = Normal(torch.zeros(4, 2), torch.ones(4, 2))
    >>> prior.kl(qz, qz.rsample())
    tensor([0., 0., 0., 0.])
    """

    def __init__(self, n_latent: int | None = None, analytic_kl: bool = True):
        super().__init__()
        self.n_latent = n_latent
        self.analytic_kl = analytic_kl

    def _check(self, z: torch.Tensor) -> None:
        if self.n_latent is not None and z.shape[-1] != self.n_latent:
            raise ValueError(
                f"z must have {self.n_latent} latent dimensions (last axis); got {tuple(z.shape)}."
            )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log density under ``N(0, I)``, summed over latent dimensions.

        Parameters
        ----------
        z
            Shape ``(..., n_latent)``.

        Returns
        -------
        torch.Tensor
            Shape ``(...,)``.
        """
        self._check(z)
        return Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)

    def kl(self, qz: Normal, z: torch.Tensor | None = None) -> torch.Tensor:
        """KL divergence to ``N(0, I)`` (closed form unless ``analytic_kl=False``).

        Parameters
        ----------
        qz
            Diagonal normal posterior ``(N, L)``.
        z
            Posterior sample; ignored when ``analytic_kl`` is ``True``.

        Returns
        -------
        torch.Tensor
            Shape ``(N,)``.
        """
        if not self.analytic_kl:
            return super().kl(qz, z)
        self._check(qz.loc)
        prior = Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.loc))
        return kl_divergence(qz, prior).sum(-1)


def _to_normal(output: Any) -> Normal:
    """Interpret common encoder outputs as a diagonal Normal."""
    if isinstance(output, Normal):
        return output
    if isinstance(output, Mapping):
        for key in ("q_dist", "qz"):
            if isinstance(output.get(key), Normal):
                return output[key]
    if isinstance(output, tuple | list) and len(output) > 0:
        if isinstance(output[0], Normal):
            return output[0]  # scvi.nn.Encoder(return_dist=True) -> (qz, z)
        if len(output) == 3 and all(isinstance(o, torch.Tensor) for o in output):
            return Normal(output[0], output[1].sqrt())  # scvi.nn.Encoder -> (mean, variance, sample)
    raise TypeError(
        "Could not read a Normal from the encoder output (expected a Normal, a dict with 'q_dist'/'qz', "
        "a tuple starting with a Normal, or scvi's (mean, variance, sample)); pass `output_to_normal=`."
    )


def _inverse_softplus(x: torch.Tensor, floor: float = 1e-4) -> torch.Tensor:
    x = x.clamp_min(floor)
    return x + torch.log(-torch.expm1(-x))


class VampPrior(LatentPrior):
    """VampPrior: a mixture of the encoder's posteriors at ``K`` learnable pseudo-inputs.

    ``p(z) = sum_k pi_k q(z | u_k, c_k)`` with ``pi = softmax(w)``. The pseudo-inputs ``u_k`` live in the
    encoder's *input space*; they are passed through the given encoder on every call (by default with
    the encoder temporarily in eval mode: BatchNorm running statistics, no dropout; gradients still
    flow into the encoder, the pseudo-inputs and the mixture logits). Semantics follow
    scvi-tools' ``scvi.external.sysvi`` VampPrior (spec sysvi.md §1.4, §2, §6 A2/A7-A9, A16).

    Parameters
    ----------
    n_components
        Number of mixture components ``K``.
    n_input
        Dimension of the encoder input (the pseudo-input width).
    n_latent
        Latent dimension ``L``.
    encoder
        The module's encoder (an ``nn.Module``). It is *not* registered as a sub-module of the prior
        (no duplicated state-dict entries); the owning module must hold it. It is called as
        ``encoder(u, **covariates)`` and its output is read with ``output_to_normal``.
    pseudoinput_data
        ``(K, n_input)`` initial pseudo-inputs, typically expression rows of ``K`` random cells (see
        :func:`select_pseudoinput_indices`). ``None`` draws them from ``N(0, 1)``.
    pseudoinput_covariates
        Keyword arguments for the encoder, one entry per argument name, taken from the same ``K`` cells,
        e.g. sysVI's ``{"batch_index": (K, 1), "cat_list": [(K, 1), ...], "cont": (K, C)}``. Entries named
        in ``categorical_covariates`` are categorical codes: they are stored as ``(K, n_categories)``
        one-hot category weights (categories on the last axis, so scArches padding lines up) and a
        category is drawn from them at every call (``torch.multinomial``, as in sysVI; the draw is not
        differentiable, so each pseudo-input keeps its cell's categories). Other tensor entries are
        continuous ``(K, C)`` values (including embedded categoricals) and become parameters, trainable
        iff ``trainable_pseudoinputs``. ``None`` values are passed through as ``None``.
    trainable_weights
        Whether the mixture logits ``w`` (initialised to 0, i.e. uniform) are learned.
    categorical_covariates
        Number of categories for each categorical entry of ``pseudoinput_covariates``: an ``int`` for a
        single code tensor, a sequence of ``int`` for a list of code tensors (like ``cat_list``).
    trainable_pseudoinputs
        Whether ``u`` and continuous pseudo-input covariates are learned.
    pseudoinput_transform
        ``None`` (pseudo-inputs unconstrained, e.g. log-normalised data) or ``"softplus"`` (stored as
        inverse-softplus, used as ``softplus(u) >= 0``; for encoders that take counts and ``log1p``
        them, spec sysvi.md §5.1 "reuse rules").
    component_scale
        ``"std"`` uses the encoder's standard deviation as the component scale (the VampPrior paper,
        sysVI's original code); ``"sqrt_std"`` uses its square root, reproducing scvi-tools' SysVI
        (which feeds the std into a variance slot; sysvi.md §6 A2).
    mixture
        ``"per_dim"``: a product over latent dimensions of 1-D mixtures (sysVI, both codes; A7);
        ``"joint"``: the multivariate mixture of Tomczak & Welling (2018).
    encode_in_eval_mode
        Encode pseudo-inputs with the encoder in eval mode (A9). Every sub-module's mode is restored.
    sample_categories
        Draw pseudo-input categories with ``torch.multinomial`` (consumes RNG like sysVI); ``False`` takes
        the arg-max, which is identical for one-hot weights but draws no random numbers.
    output_to_normal
        Callable turning the encoder output into a ``Normal``; the default understands a ``Normal``, a
        dict with ``"q_dist"``/``"qz"``, ``(Normal, z)`` and scvi's ``(mean, variance, sample)``.

    Examples
    --------
    >>> enc = torch.nn.Linear(6, 4)
    >>> def encoder(x):
    ...     h = enc(x)
    ...     return Normal(h[:, :2], F.softplus(h[:, 2:]) + 1e-4)
    >>> class Enc(torch.nn.Module):
    ...     def forward(self, x):
    ...         return encoder(x)
    >>> prior = VampPrior(n_components=3, n_input=6, n_latent=2, encoder=Enc())
    >>> prior.log_prob(torch.zeros(5, 2)).shape
    torch.Size([5])
    """

    def __init__(
        self,
        n_components: int,
        n_input: int,
        n_latent: int,
        encoder: nn.Module,
        pseudoinput_data: torch.Tensor | np.ndarray | None = None,
        pseudoinput_covariates: Mapping[str, torch.Tensor | Sequence[torch.Tensor] | None] | None = None,
        trainable_weights: bool = True,
        *,
        categorical_covariates: Mapping[str, int | Sequence[int]] | None = None,
        trainable_pseudoinputs: bool = True,
        pseudoinput_transform: Literal["softplus"] | None = None,
        component_scale: Literal["std", "sqrt_std"] = "std",
        mixture: Literal["per_dim", "joint"] = "per_dim",
        encode_in_eval_mode: bool = True,
        sample_categories: bool = True,
        output_to_normal: Callable[[Any], Normal] | None = None,
    ):
        super().__init__()
        if int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}.")
        if int(n_input) < 1 or int(n_latent) < 1:
            raise ValueError(
                f"n_input and n_latent must be >= 1, got n_input={n_input}, n_latent={n_latent}."
            )
        if not isinstance(encoder, nn.Module):
            raise TypeError(
                f"encoder must be a torch.nn.Module (its train/eval mode is switched), got {type(encoder)}."
            )
        if component_scale not in _COMPONENT_SCALES:
            raise ValueError(f"component_scale must be one of {_COMPONENT_SCALES}, got {component_scale!r}.")
        if mixture not in _MIXTURES:
            raise ValueError(f"mixture must be one of {_MIXTURES}, got {mixture!r}.")
        if pseudoinput_transform not in _TRANSFORMS:
            raise ValueError(
                f"pseudoinput_transform must be one of {_TRANSFORMS}, got {pseudoinput_transform!r}."
            )
        self.n_components = K = int(n_components)
        self.n_input = int(n_input)
        self.n_latent = int(n_latent)
        self.component_scale = component_scale
        self.mixture = mixture
        self.encode_in_eval_mode = encode_in_eval_mode
        self.sample_categories = sample_categories
        self.pseudoinput_transform = pseudoinput_transform
        self._output_to_normal = output_to_normal or _to_normal
        # held, not registered: the owning module registers (and saves) the encoder once
        object.__setattr__(self, "_encoder", encoder)

        # pseudo-inputs
        if pseudoinput_data is None:
            u = torch.randn(K, self.n_input)
        else:
            u = (
                torch.as_tensor(
                    np.asarray(pseudoinput_data)
                    if not isinstance(pseudoinput_data, torch.Tensor)
                    else pseudoinput_data
                )
                .detach()
                .clone()
                .float()
            )
            if u.shape != (K, self.n_input):
                raise ValueError(
                    f"pseudoinput_data must have shape (n_components, n_input) = ({K}, {self.n_input}); "
                    f"got {tuple(u.shape)}."
                )
            if not torch.isfinite(u).all():
                raise ValueError("pseudoinput_data contains NaN or infinite values.")
            if pseudoinput_transform == "softplus":
                if (u < 0).any():
                    raise ValueError("pseudoinput_data must be >= 0 with pseudoinput_transform='softplus'.")
                u = _inverse_softplus(u)
        self.u = nn.Parameter(u, requires_grad=trainable_pseudoinputs)

        # pseudo-input covariates
        categorical_covariates = dict(categorical_covariates or {})
        covs = dict(pseudoinput_covariates or {})
        unknown = set(categorical_covariates) - set(covs)
        if unknown:
            raise KeyError(
                f"categorical_covariates names {sorted(unknown)} that are not keys of pseudoinput_covariates "
                f"({sorted(covs)})."
            )
        self.u_cont = nn.ParameterDict()
        # (key, kind, n_items, ndim): kind in {"none", "cont", "cat", "cat_list"}
        self._cov_layout: list[tuple[str, str, int, int]] = []
        for key, value in covs.items():
            if value is None:
                self._cov_layout.append((key, "none", 0, 0))
            elif key in categorical_covariates:
                n_cat = categorical_covariates[key]
                if isinstance(n_cat, int | np.integer):
                    if isinstance(value, list | tuple):
                        raise ValueError(
                            f"pseudoinput_covariates[{key!r}] is a list but categorical_covariates "
                            f"[{key!r}] is a single int; give a list of category counts."
                        )
                    ndim = self._register_category(key, 0, value, int(n_cat))
                    self._cov_layout.append((key, "cat", 1, ndim))
                else:
                    n_cats = list(n_cat)
                    if not isinstance(value, list | tuple) or len(value) != len(n_cats):
                        raise ValueError(
                            f"pseudoinput_covariates[{key!r}] must be a list of {len(n_cats)} code tensors to "
                            f"match categorical_covariates[{key!r}]={n_cats}."
                        )
                    ndims = [
                        self._register_category(key, j, v, int(n))
                        for j, (v, n) in enumerate(zip(value, n_cats, strict=True))
                    ]
                    self._cov_layout.append((key, "cat_list", len(n_cats), ndims[0] if ndims else 2))
            else:
                if not isinstance(value, torch.Tensor | np.ndarray):
                    raise ValueError(
                        f"pseudoinput_covariates[{key!r}] is not a tensor; if it holds category codes, name it "
                        "in categorical_covariates with its number of categories."
                    )
                cont = torch.as_tensor(value).detach().clone().float()
                if cont.dim() != 2 or cont.shape[0] != K:
                    raise ValueError(
                        f"continuous pseudoinput_covariates[{key!r}] must have shape ({K}, C); got {tuple(cont.shape)}."
                    )
                self.u_cont[key] = nn.Parameter(cont, requires_grad=trainable_pseudoinputs)
                self._cov_layout.append((key, "cont", 1, 2))

        # mixture logits (uniform at init)
        self.w = nn.Parameter(torch.zeros(K), requires_grad=trainable_weights)

    def _register_category(self, key: str, j: int, codes: torch.Tensor, n_cat: int) -> int:
        codes = torch.as_tensor(codes)
        ndim = codes.dim()
        flat = codes.reshape(-1)
        if flat.shape[0] != self.n_components or ndim not in (1, 2) or (ndim == 2 and codes.shape[1] != 1):
            raise ValueError(
                f"categorical pseudoinput_covariates[{key!r}] must have shape ({self.n_components},) or "
                f"({self.n_components}, 1); got {tuple(codes.shape)}."
            )
        if n_cat < 1:
            raise ValueError(f"categorical_covariates[{key!r}] must be >= 1, got {n_cat}.")
        flat = flat.long()
        if flat.min() < 0 or flat.max() >= n_cat:
            raise ValueError(
                f"pseudoinput_covariates[{key!r}] has codes outside [0, {n_cat}) "
                f"(min {int(flat.min())}, max {int(flat.max())})."
            )
        self.register_buffer(f"u_cat__{key}__{j}", F.one_hot(flat, n_cat).float())
        return ndim

    @property
    def encoder(self) -> nn.Module:
        """The encoder the pseudo-inputs are passed through."""
        return self._encoder

    @property
    def pseudoinputs(self) -> torch.Tensor:
        """Pseudo-inputs in the encoder's input space, ``(K, n_input)``."""
        return F.softplus(self.u) if self.pseudoinput_transform == "softplus" else self.u

    @property
    def mixture_weights(self) -> torch.Tensor:
        """Mixture probabilities ``softmax(w)``, shape ``(K,)``."""
        return torch.softmax(self.w, dim=0)

    def _draw_category(self, weights: torch.Tensor, ndim: int) -> torch.Tensor:
        if self.sample_categories:
            idx = torch.multinomial(weights, num_samples=1)
        else:
            idx = weights.argmax(dim=-1, keepdim=True)
        return idx if ndim == 2 else idx[:, 0]

    def pseudoinput_covariates(self) -> dict[str, Any]:
        """Covariate keyword arguments for encoding the pseudo-inputs (categories drawn afresh).

        Returns
        -------
        dict
            One entry per key of the ``pseudoinput_covariates`` given at construction.
        """
        out: dict[str, Any] = {}
        for key, kind, n_items, ndim in self._cov_layout:
            if kind == "none":
                out[key] = None
            elif kind == "cont":
                out[key] = self.u_cont[key]
            elif kind == "cat":
                out[key] = self._draw_category(getattr(self, f"u_cat__{key}__0"), ndim)
            else:
                out[key] = [
                    self._draw_category(getattr(self, f"u_cat__{key}__{j}"), ndim) for j in range(n_items)
                ]
        return out

    def encode_pseudoinputs(self) -> Normal:
        """Pass the pseudo-inputs (and their covariates) through the encoder.

        Returns
        -------
        torch.distributions.Normal
            The encoder's posterior at each pseudo-input, ``loc``/``scale`` of shape ``(K, L)``.
        """
        covariates = self.pseudoinput_covariates()
        encoder = self._encoder
        if not self.encode_in_eval_mode:
            return self._output_to_normal(encoder(self.pseudoinputs, **covariates))
        modes = [(m, m.training) for m in encoder.modules()]
        encoder.eval()
        try:
            qu = self._output_to_normal(encoder(self.pseudoinputs, **covariates))
        finally:
            for m, mode in modes:
                m.training = mode
        return qu

    def component_distribution(self) -> Normal:
        """Mixture components ``N(alpha_k, rho_k^2)`` with ``rho = std`` or ``sqrt(std)`` (``component_scale``).

        Returns
        -------
        torch.distributions.Normal
            ``loc``/``scale`` of shape ``(K, L)``.
        """
        qu = self.encode_pseudoinputs()
        loc, scale = qu.loc, qu.scale
        if loc.shape != (self.n_components, self.n_latent):
            raise ValueError(
                f"The encoder returned components of shape {tuple(loc.shape)}; expected "
                f"(n_components, n_latent) = ({self.n_components}, {self.n_latent})."
            )
        if self.component_scale == "sqrt_std":
            scale = scale.sqrt()
        return Normal(loc, scale)

    def _component_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.n_latent:
            raise ValueError(
                f"z must have {self.n_latent} latent dimensions (last axis); got {tuple(z.shape)}."
            )
        return self.component_distribution().log_prob(z.unsqueeze(-2))  # (..., K, L)

    def log_prob_per_dim(self, z: torch.Tensor) -> torch.Tensor:
        """Per-dimension log density of the ``"per_dim"`` mixture (scvi-tools SysVI's ``log_prob``).

        Parameters
        ----------
        z
            Shape ``(..., L)``.

        Returns
        -------
        torch.Tensor
            ``log sum_k pi_k N(z_l; alpha_kl, rho_kl^2)``, shape ``(..., L)``.
        """
        if self.mixture != "per_dim":
            raise ValueError("log_prob_per_dim is only defined for mixture='per_dim'.")
        lp = self._component_log_probs(z) + torch.log_softmax(self.w, dim=0)[:, None]
        return torch.logsumexp(lp, dim=-2)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log density of ``z`` under the mixture, summed over latent dimensions.

        Parameters
        ----------
        z
            Shape ``(..., L)``.

        Returns
        -------
        torch.Tensor
            Shape ``(...,)``.
        """
        if self.mixture == "per_dim":
            return self.log_prob_per_dim(z).sum(-1)
        lp = self._component_log_probs(z).sum(-1) + torch.log_softmax(self.w, dim=0)
        return torch.logsumexp(lp, dim=-1)

    def component_posteriors(self, z: torch.Tensor) -> torch.Tensor:
        """Responsibilities ``p(k | z)`` of the (joint) components, for analysis.

        Parameters
        ----------
        z
            Shape ``(..., L)``.

        Returns
        -------
        torch.Tensor
            Shape ``(..., K)``, rows sum to 1.
        """
        lp = self._component_log_probs(z).sum(-1) + torch.log_softmax(self.w, dim=0)
        return torch.softmax(lp, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"n_components={self.n_components}, n_input={self.n_input}, n_latent={self.n_latent}, "
            f"mixture={self.mixture!r}, component_scale={self.component_scale!r}"
        )


def select_pseudoinput_indices(
    n_obs: int, n_components: int, random_state: int | None = None, replace: bool = True
) -> np.ndarray:
    """Pick the cells whose rows initialise VampPrior pseudo-inputs.

    Parameters
    ----------
    n_obs
        Number of cells available.
    n_components
        Number of pseudo-inputs ``K``.
    random_state
        ``None`` draws from NumPy's global RNG with ``np.random.randint`` exactly like scvi-tools' SysVI
        (reproducible through ``scvi.settings.seed``); an ``int`` uses ``np.random.default_rng(random_state)``.
    replace
        Draw with replacement (sysVI's behaviour).

    Returns
    -------
    numpy.ndarray
        ``(K,)`` integer row indices.

    Examples
    --------
    >>> select_pseudoinput_indices(10, 4, random_state=0).shape
    (4,)
    """
    if n_obs < 1:
        raise ValueError(f"n_obs must be >= 1, got {n_obs}.")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}.")
    if not replace and n_components > n_obs:
        raise ValueError(f"Cannot draw {n_components} distinct cells out of {n_obs}; use replace=True.")
    if random_state is None:
        if replace:
            return np.random.randint(0, n_obs, n_components)  # noqa: NPY002 (same draw as SysVI)
        return np.random.choice(n_obs, n_components, replace=False)  # noqa: NPY002
    return np.random.default_rng(random_state).choice(n_obs, n_components, replace=replace)


_VAMP_ONLY = set(inspect.signature(VampPrior.__init__).parameters) - {"self", "n_latent"}


def make_prior(name: str, *, n_latent: int | None = None, **kwargs: Any) -> LatentPrior:
    """Build a prior by name, so a module can switch priors with one argument.

    Parameters
    ----------
    name
        ``"standard_normal"`` or ``"vamp"`` (see :data:`PRIOR_NAMES`).
    n_latent
        Latent dimension.
    **kwargs
        For ``"vamp"``: the arguments of :class:`VampPrior`. For ``"standard_normal"``: ``analytic_kl``;
        VampPrior-only arguments are accepted and ignored, so callers can pass one set of arguments.

    Returns
    -------
    LatentPrior
        The prior module.

    Examples
    --------
    >>> make_prior("standard_normal", n_latent=3, n_components=5)
    StandardNormalPrior()
    """
    if name == PRIOR_NAMES.STANDARD_NORMAL:
        analytic_kl = kwargs.pop("analytic_kl", True)
        unknown = set(kwargs) - _VAMP_ONLY
        if unknown:
            raise TypeError(f"make_prior('standard_normal') got unexpected arguments {sorted(unknown)}.")
        return StandardNormalPrior(n_latent=n_latent, analytic_kl=analytic_kl)
    if name == PRIOR_NAMES.VAMP:
        if n_latent is None:
            raise ValueError("make_prior('vamp') needs n_latent.")
        return VampPrior(n_latent=n_latent, **kwargs)
    raise ValueError(f"Unknown prior {name!r}; expected one of {tuple(PRIOR_NAMES)}.")
