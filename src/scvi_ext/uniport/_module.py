"""uniPort's module: shared encoder, DSBN common decoder, per-dataset decoders, minibatch UOT loss."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal

from ..ot import gaussian_w2_cost
from ._constants import BN_MODES, DEFAULTS, KEYS, LOSSES, MODES
from ._ot import uot_minibatch


class _BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that can use batch statistics in eval mode without updating its running statistics.

    ``use_batch_stats`` is toggled by :meth:`UniPortVAE.set_bn_mode` (spec §7 ``bn_mode="batch"``). A
    one-row input is passed through unchanged (spec §3: the norm is skipped for a batch of one row).
    """

    use_batch_stats: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.shape[0] <= 1:
            return x
        if not self.training and self.use_batch_stats:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


class DSBatchNorm1d(nn.Module):
    """Domain-specific batch normalisation: one :class:`~torch.nn.BatchNorm1d` per source (spec §3).

    Rows of source ``k`` are normalised with ``BN_k`` on their own statistics; a source present with a
    single row uses ``BN_k``'s running statistics for that call.

    Parameters
    ----------
    n_features
        Width of the input.
    n_sources
        Number of sources.

    Examples
    --------
    >>> bn = DSBatchNorm1d(3, 2)
    >>> bn(torch.randn(5, 3), torch.tensor([0, 0, 1, 1, 1])).shape
    torch.Size([5, 3])
    """

    def __init__(self, n_features: int, n_sources: int):
        super().__init__()
        self.bns = nn.ModuleList([_BatchNorm(n_features) for _ in range(n_sources)])

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = torch.zeros_like(x)
        for k in torch.unique(source).tolist():
            rows = source == k
            bn = self.bns[int(k)]
            if int(rows.sum()) == 1:
                out[rows] = F.batch_norm(
                    x[rows], bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
                )
            else:
                out[rows] = bn(x[rows])
        return out


class _Encoder(nn.Module):
    """``Linear(d, n_hidden) -> BN -> ReLU`` then mean / log-variance heads (spec §3.1)."""

    def __init__(self, n_input: int, n_hidden: int, n_latent: int):
        super().__init__()
        self.fc = nn.Linear(n_input, n_hidden)
        self.bn = _BatchNorm(n_hidden)
        self.mean = nn.Linear(n_hidden, n_latent)
        self.logvar = nn.Linear(n_hidden, n_latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.bn(self.fc(x)))
        return self.mean(h), self.logvar(h)


class _Decoder(nn.Module):
    """``Linear(n_latent, d) -> BN (plain or per source) -> sigmoid`` (spec §3.1)."""

    def __init__(self, n_latent: int, n_output: int, n_sources: int | None = None):
        super().__init__()
        self.fc = nn.Linear(n_latent, n_output)
        self.norm = _BatchNorm(n_output) if n_sources is None else DSBatchNorm1d(n_output, n_sources)

    def forward(self, z: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(z)
        if isinstance(self.norm, DSBatchNorm1d):
            h = self.norm(h, source) if h.shape[0] > 1 else h
        else:
            h = self.norm(h)
        return torch.sigmoid(h)


class _BinaryCrossEntropy(torch.autograd.Function):
    """Element-wise ``F.binary_cross_entropy(p, x, reduction="none")`` with the same forward and backward formulas
    (ATen's: ``(x - 1) * max(log1p(-p), -100) - x * max(log p, -100)``; gradient
    ``(p - x) / max(p (1 - p), 1e-12)`` w.r.t. ``p``), written as vectorised tensor ops: ATen's CPU kernel is
    scalar and was ~10 % of a uniPort training step (3 calls per step on 256 x 172-400 inputs).
    Gradients flow to ``p`` only (the target is data).
    """

    @staticmethod
    def forward(ctx, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(p, x)
        return (x - 1) * torch.log1p(-p).clamp_min_(-100.0) - x * torch.log(p).clamp_min_(-100.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        p, x = ctx.saved_tensors
        return grad * (p - x) / (p * (1 - p)).clamp_min_(1e-12), None


def binary_cross_entropy(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Element-wise binary cross-entropy, same values and gradients as ``F.binary_cross_entropy``.

    Examples
    --------
    >>> p, x = torch.tensor([0.2, 0.9]), torch.tensor([0.0, 1.0])
    >>> torch.allclose(binary_cross_entropy(p, x), F.binary_cross_entropy(p, x, reduction="none"))
    True
    """
    if x.requires_grad:  # a target with gradients: keep ATen's op (which also refuses it)
        return F.binary_cross_entropy(p, x, reduction="none")
    return _BinaryCrossEntropy.apply(p, x)


def _recon(x_hat: torch.Tensor, x: torch.Tensor, loss_type: str) -> torch.Tensor:
    """Per-cell mean over features of BCE / MSE / L1."""
    if loss_type == LOSSES.BCE:
        out = binary_cross_entropy(x_hat, x)
    elif loss_type == LOSSES.MSE:
        out = (x_hat - x) ** 2
    else:
        out = (x_hat - x).abs()
    return out.mean(-1)


class UniPortVAE(BaseModuleClass):
    """uniPort's coupled VAE with a minibatch unbalanced-OT loss (Cao et al., Nat. Commun. 2022).

    Mode ``h``: one encoder on the common block, a common decoder with domain-specific BN and one decoder
    per source for its specific block; ``v``: encoder on modality 0, one decoder per modality; ``d``: one
    encoder/decoder pair per source on its own (zero-padded) input. Loss (spec §4):
    ``lambda_recon * REC + lambda_kl * KL + ot_weight * OT``.

    Parameters
    ----------
    n_input
        Width of the registered X (common block; modality 0 in mode ``v``; padded width in mode ``d``).
    n_sources
        Number of sources (datasets).
    specific_widths
        Width of each source's specific block (mode ``h``; 0 = none) or each extra modality (mode ``v``);
        in mode ``d`` the input width of each source.
    reference_idx
        Code of the reference source of the OT term.
    mode
        ``"h"``, ``"v"`` or ``"d"``.
    n_latent, n_hidden
        Latent size (16) and encoder hidden units (1024).
    lambda_s, lambda_recon, lambda_kl
        Loss weights (spec §4).
    reg, reg_m, n_outer, n_inner
        Minibatch UOT solver settings (spec §4.1).
    loss_type
        ``"bce"`` (default), ``"mse"`` or ``"l1"``.
    recon_scale
        Constant multiplying the mean reconstruction error (2000; spec A9).
    prior_alpha
        If set, the OT cost is multiplied inside the solver by ``1/alpha`` for equal labels and ``alpha``
        otherwise (``get_prior``; labels from the registered labels field).
    weighted_sources
        Mode ``h``: per source, whether its cells carry weights (the registered ``uniport_weight`` field,
        reference ``label_weight``). If any: the common reconstruction becomes the mean over sources of the
        per-source (weighted) BCE, and the UOT marginals of weighted sources are their normalised weights
        (spec §4 "Optional label reweighting", A17).

    Examples
    --------
    >>> m = UniPortVAE(20, 2, [0, 0], reference_idx=1, n_hidden=8)
    >>> out = m.inference(torch.rand(4, 20), torch.tensor([[0], [0], [1], [1]]))
    >>> out["qz_m"].shape
    torch.Size([4, 16])
    """

    def __init__(
        self,
        n_input: int,
        n_sources: int,
        specific_widths: Sequence[int],
        reference_idx: int,
        mode: str = MODES.HORIZONTAL,
        n_latent: int = DEFAULTS.N_LATENT,
        n_hidden: int = DEFAULTS.N_HIDDEN,
        lambda_s: float = DEFAULTS.LAMBDA_S,
        lambda_recon: float = DEFAULTS.LAMBDA_RECON,
        lambda_kl: float = DEFAULTS.LAMBDA_KL,
        reg: float = DEFAULTS.REG,
        reg_m: float = DEFAULTS.REG_M,
        n_outer: int = DEFAULTS.N_OUTER,
        n_inner: int = DEFAULTS.N_INNER,
        loss_type: str = LOSSES.BCE,
        recon_scale: float = DEFAULTS.RECON_SCALE,
        prior_alpha: float | None = None,
        weighted_sources: Sequence[bool] | None = None,
    ):
        super().__init__()
        self.mode = mode
        self.n_input = int(n_input)
        self.n_sources = int(n_sources)
        self.specific_widths = [int(w) for w in specific_widths]
        self.reference_idx = int(reference_idx)
        self.n_latent = n_latent
        self.lambda_s, self.lambda_recon, self.lambda_kl = lambda_s, lambda_recon, lambda_kl
        self.reg, self.reg_m, self.n_outer, self.n_inner = reg, reg_m, n_outer, n_inner
        self.loss_type = loss_type
        self.recon_scale = recon_scale
        self.prior_alpha = prior_alpha
        self.weighted_sources = (
            [bool(w) for w in weighted_sources]
            if weighted_sources is not None and any(weighted_sources)
            else None
        )
        self._last_ot: dict[int, torch.Tensor] = {}
        if mode == MODES.DIAGONAL:
            self.encoders = nn.ModuleList([_Encoder(w, n_hidden, n_latent) for w in self.specific_widths])
            self.decoders = nn.ModuleList([_Decoder(n_latent, w) for w in self.specific_widths])
        else:
            self.encoder = _Encoder(self.n_input, n_hidden, n_latent)
            if mode == MODES.HORIZONTAL:
                self.decoder = _Decoder(n_latent, self.n_input, n_sources=self.n_sources)
                widths = self.specific_widths
            else:  # vertical: decoder 0 reconstructs X, decoders 1.. the extra modalities
                widths = [self.n_input, *self.specific_widths]
            self.decoders = nn.ModuleList([_Decoder(n_latent, max(w, 1)) for w in widths])

    # ------------------------------------------------------------------ BN mode at inference
    def set_bn_mode(self, bn_mode: str) -> None:
        """Make eval-mode BNs use batch statistics (``"batch"``) or running statistics (``"running"``).

        Examples
        --------
        >>> UniPortVAE(5, 2, [0, 0], 1, n_hidden=4).set_bn_mode("running")
        """
        for mod in self.modules():
            if isinstance(mod, _BatchNorm):
                mod.use_batch_stats = bn_mode == BN_MODES.BATCH

    # ------------------------------------------------------------------ scvi-tools interface
    def _get_inference_input(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": tensors[REGISTRY_KEYS.X_KEY], "source": tensors[REGISTRY_KEYS.BATCH_KEY]}

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor]:
        return {"z": inference_outputs["z"], "source": tensors[REGISTRY_KEYS.BATCH_KEY]}

    def encode(
        self, x: torch.Tensor, source: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance; mode ``d`` routes each row to its source's encoder.

        Examples
        --------
        >>> m = UniPortVAE(6, 2, [0, 0], 1, n_hidden=4)
        >>> m.encode(torch.rand(3, 6))[0].shape
        torch.Size([3, 16])
        """
        if self.mode != MODES.DIAGONAL:
            return self.encoder(x)
        source = source.long().ravel()
        mu = x.new_zeros(x.shape[0], self.n_latent)
        logvar = x.new_zeros(x.shape[0], self.n_latent)
        for k in torch.unique(source).tolist():
            rows = source == k
            m, lv = self.encoders[int(k)](x[rows, : self.specific_widths[int(k)]])
            mu[rows], logvar[rows] = m, lv
        return mu, logvar

    @auto_move_data
    def inference(self, x: torch.Tensor, source: torch.Tensor, n_samples: int = 1) -> dict[str, torch.Tensor]:
        """Encode: ``qz_m`` (mean), ``qz_s`` (std), ``z`` (reparameterised sample), ``qz``."""
        mu, logvar = self.encode(x, source)
        std = torch.exp(0.5 * logvar)
        qz = Normal(mu, std)
        return {"qz": qz, "qz_m": mu, "qz_s": std, "z": qz.rsample()}

    @auto_move_data
    def generative(self, z: torch.Tensor, source: torch.Tensor) -> dict[str, torch.Tensor | dict]:
        """Decode: common reconstruction (mode ``h``) and per-source/modality reconstructions."""
        source = source.long().ravel()
        out: dict[str, torch.Tensor | dict] = {}
        if self.mode == MODES.HORIZONTAL:
            out["x_common"] = self.decoder(z, source)
            out["x_specific"] = {
                k: self.decoders[k](z[source == k])
                for k in torch.unique(source).tolist()
                if self.specific_widths[k] > 0
            }
        elif self.mode == MODES.VERTICAL:
            out["x_modality"] = {k: dec(z) for k, dec in enumerate(self.decoders)}
        else:
            out["x_own"] = {k: self.decoders[k](z[source == k]) for k in torch.unique(source).tolist()}
        return out

    def decode(self, z: torch.Tensor, target: int, via: str = "specific") -> torch.Tensor:
        """Decode ``z`` into source ``target``'s features (``via="specific"``) or the common features as
        if from ``target`` (``via="common"``, DSBN index ``target``; mode ``h``).

        Examples
        --------
        >>> m = UniPortVAE(6, 2, [3, 0], 1, n_hidden=4)
        >>> m.decode(torch.randn(4, 16), 0).shape
        torch.Size([4, 3])
        """
        if via == "common":
            src = torch.full((z.shape[0],), int(target), dtype=torch.long, device=z.device)
            return self.decoder(z, src)
        return self.decoders[int(target)](z)

    def _ot_term(self, tensors, mu, std, source, ot_init) -> torch.Tensor:
        """Sum over queries q of <C_q, T_q> against the reference rows of the batch (spec §4).

        All query blocks are solved in one batched call (rows padded with zero mass).
        """
        ref = self.reference_idx
        rows_r = source == ref
        self._last_ot = {}
        if not bool(rows_r.any()):
            return mu.new_zeros(())
        mu_r, std_r = mu[rows_r].detach(), std[rows_r].detach()
        labels = tensors.get(REGISTRY_KEYS.LABELS_KEY) if self.prior_alpha is not None else None
        weights = tensors.get(KEYS.WEIGHT) if self.weighted_sources is not None else None
        if weights is not None:
            weights = weights.ravel().to(mu)

        def masses(rows: torch.Tensor, k: int) -> torch.Tensor | None:
            """Normalised weights of a weighted source's rows (reference `label_weight`), else None."""
            if weights is None or not self.weighted_sources[k]:
                return None
            w = weights[rows]
            return w / w.sum().clamp_min(torch.finfo(w.dtype).tiny)

        b = masses(rows_r, ref)
        queries = [q for q in torch.unique(source).tolist() if q != ref]
        costs, priors, inits, a_list = [], [], [], []
        for q in queries:
            rows_q = source == q
            costs.append(
                gaussian_w2_cost(mu[rows_q], std[rows_q], mu_r, std_r, validate=False) + DEFAULTS.COST_EPS
            )
            if labels is not None:
                lab = labels.long().ravel()
                same = lab[rows_q][:, None] == lab[rows_r][None, :]
                priors.append(torch.where(same, 1.0 / self.prior_alpha, float(self.prior_alpha)).to(mu))
            T0 = None if ot_init is None else ot_init.get(int(q))
            inits.append(T0)
            a_list.append(masses(rows_q, int(q)))
        solve = {"reg": self.reg, "reg_m": self.reg_m, "n_outer": self.n_outer, "n_inner": self.n_inner}
        if len(queries) == 1:
            plans = [
                uot_minibatch(
                    costs[0], inits[0], a=a_list[0], b=b, prior=priors[0] if priors else None, **solve
                )
            ]
        else:
            n_max, m = max(c.shape[0] for c in costs), costs[0].shape[1]
            Q = len(costs)
            C_pad = mu.new_zeros(Q, n_max, m)
            a = mu.new_zeros(Q, n_max)
            T0 = mu.new_ones(Q, n_max, m)
            P = mu.new_ones(Q, n_max, m) if priors else None
            for i, c in enumerate(costs):
                k = c.shape[0]
                C_pad[i, :k] = c.detach()
                a[i, :k] = 1.0 / k if a_list[i] is None else a_list[i]
                T0[i, :k] = inits[i] if inits[i] is not None else 1.0 / (k * m)
                if P is not None:
                    P[i, :k] = priors[i]
            T = uot_minibatch(C_pad, T0, a=a, b=b, prior=P, **solve)
            plans = [T[i, : c.shape[0]] for i, c in enumerate(costs)]
        total = mu.new_zeros(())
        for q, c, T in zip(queries, costs, plans, strict=True):
            self._last_ot[int(q)] = T
            total = total + (c * T).sum()
        return total

    def _weighted_common(self, x_hat, x, source, tensors) -> torch.Tensor:
        """``sum_s 1/S * scale * BCE_s`` with per-cell weights for weighted sources (reference ``label_weight``;
        BCE even if ``loss_type`` is MSE/L1 for the weighted ones, spec A17)."""
        weights = tensors[KEYS.WEIGHT].ravel().to(x)
        total = x.new_zeros(())
        for k in torch.unique(source).tolist():
            rows = source == k
            if self.weighted_sources[k]:
                err = F.binary_cross_entropy(x_hat[rows], x[rows], weight=weights[rows][:, None])
            else:
                err = _recon(x_hat[rows], x[rows], self.loss_type).mean()
            total = total + err * self.recon_scale / self.n_sources
        return total

    def loss(
        self,
        tensors: Mapping[str, torch.Tensor],
        inference_outputs: Mapping[str, torch.Tensor],
        generative_outputs: Mapping,
        kl_weight: float = 1.0,
        ot_weight: float = 1.0,
        ot_init: Mapping[int, torch.Tensor] | None = None,
    ) -> LossOutput:
        """Spec §4: ``lambda_recon * REC + lambda_kl * KL + ot_weight * OT`` (scalar exactly as the reference).

        ``kl_weight`` (scvi's warm-up factor, 1 without warm-up) multiplies ``lambda_kl``. Per-cell
        ``reconstruction_loss``/``kl_local`` are for logging; ``extra_metrics`` holds ``ot_loss``.
        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        source = tensors[REGISTRY_KEYS.BATCH_KEY].long().ravel()
        mu, std = inference_outputs["qz_m"], inference_outputs["qz_s"]
        kl_cell = 0.5 * (mu.pow(2) + std.pow(2) - 2 * torch.log(std) - 1).sum(-1)
        scale = self.recon_scale
        rec_spec = x.new_zeros(())
        rec_common = x.new_zeros(())
        rec_cell = torch.zeros_like(kl_cell)
        if self.mode == MODES.HORIZONTAL:
            per_cell = _recon(generative_outputs["x_common"], x, self.loss_type)
            rec_common = scale * per_cell.mean()
            rec_cell = scale * per_cell
            if self.weighted_sources is not None:
                rec_common = self._weighted_common(generative_outputs["x_common"], x, source, tensors)
            if generative_outputs["x_specific"]:
                spec = tensors[KEYS.SPECIFIC]
                for k, x_hat in generative_outputs["x_specific"].items():
                    rows = source == k
                    pc = _recon(x_hat, spec[rows, : self.specific_widths[k]], self.loss_type)
                    rec_spec = rec_spec + scale * pc.mean()
                    rec_cell[rows] = rec_cell[rows] + self.lambda_s * scale * pc
            rec = rec_common + self.lambda_s * rec_spec
            kl = kl_cell.mean()
        elif self.mode == MODES.VERTICAL:
            outs = generative_outputs["x_modality"]
            pc0 = _recon(outs[0], x, self.loss_type)
            rec_common = scale * pc0.mean()
            rec_cell = scale * pc0
            if len(outs) > 1:
                spec = tensors[KEYS.SPECIFIC]
                start = 0
                for k in range(1, len(outs)):
                    w = self.specific_widths[k - 1]
                    pc = _recon(outs[k], spec[:, start : start + w], self.loss_type)
                    start += w
                    rec_spec = rec_spec + scale * pc.mean()
                    rec_cell = rec_cell + self.lambda_s * scale * pc
            rec = rec_common + self.lambda_s * rec_spec
            kl = kl_cell.mean()
        else:  # diagonal: per-source means, scale = padded width (spec §4, A9)
            width = float(x.shape[1])
            rec = x.new_zeros(())
            kl = x.new_zeros(())
            for k, x_hat in generative_outputs["x_own"].items():
                rows = source == k
                pc = _recon(x_hat, x[rows, : self.specific_widths[k]], self.loss_type)
                rec = rec + width * pc.mean()
                rec_cell[rows] = width * pc
                kl = kl + kl_cell[rows].mean()
            rec_common = rec
        ot = x.new_zeros(())
        if self.mode != MODES.VERTICAL and int(torch.unique(source).numel()) > 1:
            ot = self._ot_term(tensors, mu, std, source, ot_init)
        else:
            self._last_ot = {}
        loss = self.lambda_recon * rec + kl_weight * self.lambda_kl * kl + ot_weight * ot
        return LossOutput(
            loss=loss,
            reconstruction_loss=rec_cell,
            kl_local=kl_cell,
            extra_metrics={
                KEYS.OT_LOSS: ot.detach(),
                KEYS.REC_COMMON: rec_common.detach(),
                KEYS.REC_SPECIFIC: rec_spec.detach(),
            },
        )
