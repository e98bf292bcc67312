"""scBIOT part B module: dual-view tokenised-Transformer VAE with prototype clustering (spec §4)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from ._constants import (
    QUANTILE_CLIP,
    REGISTRY_KEYS,
    VAE_DEFAULTS,
    VIEW2_CLIP,
    VIEW2_GLOBAL_MIX,
    VIEW2_MIN_CELLS,
    VIEW2_SHRINK_N,
)


class _Tokenizer(nn.Module):
    """FT-Transformer feature tokeniser: token 0 = learned [CLS], token j = x_j W_j + b_j (spec §4.3)."""

    def __init__(self, n_features: int, d_token: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_features + 1, d_token))
        self.bias = nn.Parameter(torch.empty(n_features, d_token))
        for p in (self.weight, self.bias):
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.weight[:1].expand(x.shape[0], 1, -1)
        return torch.cat([cls, x[:, :, None] * self.weight[None, 1:] + self.bias[None]], dim=1)


class _Block(nn.Module):
    """Pre-norm Transformer block (1 head, no dropout; the very first block has no attention input norm)."""

    def __init__(self, d: int, d_ffn: int, first: bool):
        super().__init__()
        self.norm_att = nn.Identity() if first else nn.LayerNorm(d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        for lin in (self.q, self.k, self.v):
            nn.init.zeros_(lin.bias)
        self.norm_ffn = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, d_ffn), nn.ReLU(), nn.Linear(d_ffn, d))
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_att(x)
        att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) * self.scale, dim=-1)
        x = x + att @ self.v(h)
        return x + self.ffn(self.norm_ffn(x))


class _Transformer(nn.Module):
    def __init__(self, d: int, n_layers: int, ffn_factor: int):
        super().__init__()
        self.blocks = nn.ModuleList([_Block(d, d * ffn_factor, i == 0) for i in range(n_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


def _interp_rows(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Per-feature linear interpolation: ``x (B, D)``, sorted ``xp (D, Q)``, values ``fp (Q,)``."""
    xt = x.t().contiguous()  # (D, B)
    idx = torch.searchsorted(xp.contiguous(), xt).clamp(1, xp.shape[1] - 1)
    x_lo, x_hi = xp.gather(1, idx - 1), xp.gather(1, idx)
    f_lo, f_hi = fp[idx - 1], fp[idx]
    w = ((xt - x_lo) / (x_hi - x_lo).clamp_min(1e-12)).clamp(0.0, 1.0)
    return (f_lo + w * (f_hi - f_lo)).t()


class SCBIOTVAE(BaseModuleClass):
    """Dual-view tokenised-Transformer VAE with a prototype head (scBIOT part B, spec §4).

    The two view transforms (per-feature quantile → N(0, 1); shrunken per-batch robust standardisation of
    view 1) are module **buffers**, fitted once on the training cells, so query cells are encoded without
    refitting. Both views go through the same network; the prototypes are a parameter (AdamW) that is also
    EMA-updated after every optimiser step (:meth:`on_train_batch_end`).

    Parameters
    ----------
    n_input
        Width ``D`` of the OT embedding.
    n_batch
        Number of batches with view-2 statistics (codes ``>= n_batch`` use the global statistics).
    n_prototypes
        Number of prototypes ``K`` (pseudo-label codes index them, so at most ``K`` pseudo-classes).
    d_token, n_layers, ffn_factor
        Token width, Transformer depth and FFN expansion.
    n_quantiles
        Knots of the quantile table (the model uses ``max(min(n_train // 30, 1000), 10)``, as sklearn).
    has_pseudo_labels
        Whether the ``labels`` registry field holds OT pseudo-labels (else ``L_sup`` and the NMI monitor are off).
    unlabeled_code
        Code of the unlabeled category in the labels field (mapped to ``-1``); ``-1`` if none.
    **hyperparams
        Overrides of :data:`scvi_ext.scbiot._constants.VAE_DEFAULTS` (``proto_tau``, ``cosface_m``, ...).

    Examples
    --------
    >>> m = SCBIOTVAE(n_input=8, n_batch=2, n_prototypes=6)
    >>> out = m.inference(torch.randn(5, 8), torch.zeros(5, 1))
    >>> out["z1"].shape
    torch.Size([5, 9, 4])
    """

    def __init__(
        self,
        n_input: int,
        n_batch: int,
        n_prototypes: int = 64,
        d_token: int = 4,
        n_layers: int = 2,
        ffn_factor: int = 32,
        n_quantiles: int = 1000,
        has_pseudo_labels: bool = False,
        unlabeled_code: int = -1,
        **hyperparams: Any,
    ):
        super().__init__()
        unknown = set(hyperparams) - set(VAE_DEFAULTS)
        if unknown:
            raise ValueError(
                f"Unknown SCBIOT hyperparameters {sorted(unknown)}; known: {sorted(VAE_DEFAULTS)}."
            )
        self.hp = {**VAE_DEFAULTS, **hyperparams}
        self.n_input, self.n_batch, self.n_prototypes, self.d_token = n_input, n_batch, n_prototypes, d_token
        self.has_pseudo_labels = has_pseudo_labels
        self.unlabeled_code = int(unlabeled_code)
        self.tokenizer = _Tokenizer(n_input, d_token)
        self.enc_mu = _Transformer(d_token, n_layers, ffn_factor)
        self.enc_logvar = _Transformer(d_token, n_layers, ffn_factor)
        self.dec = _Transformer(d_token, n_layers, ffn_factor)
        self.head = nn.Parameter(torch.empty(n_input, d_token))
        nn.init.xavier_uniform_(self.head, gain=1.0 / math.sqrt(2.0))
        self.flat_dim = (n_input + 1) * d_token
        self.prototypes = nn.Parameter(F.normalize(torch.randn(n_prototypes, self.flat_dim), dim=1))
        # view transforms (fitted by fit_views); placeholders until then
        q = torch.linspace(-1.0, 1.0, n_quantiles)
        self.register_buffer("quantiles", q.repeat(n_input, 1))
        ref = torch.linspace(1e-7, 1 - 1e-7, n_quantiles, dtype=torch.float64)
        self.register_buffer(
            "quantile_targets", torch.special.ndtri(ref).float().clamp(-QUANTILE_CLIP, QUANTILE_CLIP)
        )
        self.register_buffer("batch_mu", torch.zeros(n_batch, n_input))
        self.register_buffer("batch_sd", torch.ones(n_batch, n_input))
        self.register_buffer("batch_valid", torch.zeros(n_batch, dtype=torch.bool))
        self.register_buffer("global_mu", torch.zeros(n_input))
        self.register_buffer("global_sd", torch.ones(n_input))
        self.register_buffer("prototypes_initialized", torch.zeros((), dtype=torch.bool))
        self._cache: dict[str, torch.Tensor] = {}
        self._nmi_steps: list[float] = []

    # ------------------------------------------------------------------ views
    @torch.no_grad()
    def fit_views(self, X: np.ndarray, batch: np.ndarray) -> None:
        """Fit the quantile table and the per-batch view-2 statistics on training cells (spec §4.2).

        Parameters
        ----------
        X
            Training embedding ``(n, D)``.
        batch
            Integer batch codes ``(n,)``.
        """
        nq = int(self.quantiles.shape[1])
        probs = np.linspace(0, 1, nq)
        qt = np.quantile(np.asarray(X, dtype=np.float64), probs, axis=0).T  # (D, nq)
        # strictly increasing knots for searchsorted
        qt = np.maximum.accumulate(qt + np.arange(nq)[None] * 1e-9, axis=1)
        self.quantiles = torch.as_tensor(qt, dtype=torch.float32, device=self.quantiles.device)
        ref = torch.special.ndtri(torch.as_tensor(np.clip(probs, 1e-7, 1 - 1e-7), dtype=torch.float64))
        self.quantile_targets = ref.float().clamp(-QUANTILE_CLIP, QUANTILE_CLIP).to(self.quantiles.device)
        v1 = self._view1(torch.as_tensor(X, dtype=torch.float32, device=self.quantiles.device)).cpu().numpy()
        g_mu = np.median(v1, 0)
        g_sd = 1.4826 * (np.median(np.abs(v1 - g_mu), 0) + 1e-6)
        mu = np.tile(g_mu, (self.n_batch, 1))
        sd = np.tile(g_sd, (self.n_batch, 1))
        valid = np.zeros(self.n_batch, dtype=bool)
        for bb in range(self.n_batch):
            sel = v1[batch == bb]
            if len(sel) < VIEW2_MIN_CELLS:
                continue
            a = VIEW2_SHRINK_N / (VIEW2_SHRINK_N + len(sel))
            m_b, s_b = sel.mean(0), sel.std(0) + 1e-6
            mu_b = (1 - a) * m_b + a * g_mu
            sd_b = np.sqrt((1 - a) * s_b**2 + a * g_sd**2)
            mu[bb] = (1 - VIEW2_GLOBAL_MIX) * mu_b + VIEW2_GLOBAL_MIX * g_mu
            sd[bb] = (1 - VIEW2_GLOBAL_MIX) * sd_b + VIEW2_GLOBAL_MIX * g_sd
            valid[bb] = True
        dev = self.quantiles.device
        self.batch_mu = torch.as_tensor(mu, dtype=torch.float32, device=dev)
        self.batch_sd = torch.as_tensor(sd, dtype=torch.float32, device=dev)
        self.batch_valid = torch.as_tensor(valid, device=dev)
        self.global_mu = torch.as_tensor(g_mu, dtype=torch.float32, device=dev)
        self.global_sd = torch.as_tensor(g_sd, dtype=torch.float32, device=dev)

    def _view1(self, x: torch.Tensor) -> torch.Tensor:
        return _interp_rows(x, self.quantiles, self.quantile_targets)

    def _view2(self, v1: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        b = batch.long().view(-1)
        known = (b >= 0) & (b < self.n_batch)
        bc = b.clamp(0, self.n_batch - 1)
        use = known & self.batch_valid[bc]
        mu = torch.where(use[:, None], self.batch_mu[bc], self.global_mu[None])
        sd = torch.where(use[:, None], self.batch_sd[bc], self.global_sd[None])
        return ((v1 - mu) / sd).clamp(-VIEW2_CLIP, VIEW2_CLIP)

    # ------------------------------------------------------------------ network
    def _encode(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(v)
        mu, lv = self.enc_mu(tok), self.enc_logvar(tok)
        z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu) if self.training else mu
        return mu, lv, z

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": tensors[REGISTRY_KEYS.X_KEY], "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY]}

    @auto_move_data
    def inference(self, x: torch.Tensor, batch_index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode both views: ``mu{1,2}``, ``logvar{1,2}`` and ``z{1,2}`` of shape ``(B, D+1, d_token)``.

        Parameters
        ----------
        x
            OT embedding ``(B, D)``.
        batch_index
            Batch codes ``(B, 1)``.

        Returns
        -------
        dict
            Views ``v1``, ``v2`` and their posteriors.
        """
        v1 = self._view1(x)
        v2 = self._view2(v1, batch_index)
        mu1, lv1, z1 = self._encode(v1)
        mu2, lv2, z2 = self._encode(v2)
        return {
            "v1": v1,
            "v2": v2,
            "mu1": mu1,
            "logvar1": lv1,
            "z1": z1,
            "mu2": mu2,
            "logvar2": lv2,
            "z2": z2,
        }

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor]:
        return {"z": inference_outputs["z1"]}

    @auto_move_data
    def generative(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode ``x̂_j = Σ_k h_jk V_jk`` with ``h = dec(z[:, 1:])`` (CLS dropped).

        Parameters
        ----------
        z
            Latent tokens ``(B, D+1, d_token)``.

        Returns
        -------
        dict
            ``{"x_hat": (B, D)}``.
        """
        h = self.dec(z[:, 1:])
        return {"x_hat": (h * self.head[None]).sum(-1)}

    # ------------------------------------------------------------------ prototypes
    def _logits(self, z_flat: torch.Tensor) -> torch.Tensor:
        return F.normalize(z_flat, dim=1) @ F.normalize(self.prototypes, dim=1).t() / self.hp["proto_tau"]

    def _labels(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not self.has_pseudo_labels or REGISTRY_KEYS.LABELS_KEY not in tensors:
            return None
        y = tensors[REGISTRY_KEYS.LABELS_KEY].long().view(-1)
        return torch.where(y == self.unlabeled_code, torch.full_like(y, -1), y)

    @staticmethod
    def _kl(mu: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
        return -0.5 * torch.mean(1 + lv - mu.pow(2) - lv.exp())

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict[str, torch.Tensor],
        kl_weight: float = 1.0,
        prototype_weight: float = VAE_DEFAULTS["lam_clust"],
        center_weight: float = VAE_DEFAULTS["lam_center"],
        margin_weight: float = VAE_DEFAULTS["lam_margin"],
        sup_weight: float = VAE_DEFAULTS["lam_sup"],
    ) -> LossOutput:
        """Eq. 11: ``L_vae + λ_clust L_clust + r_c λ_center L_center + λ_rep L_rep + r_s(λ_m L_m + λ_s L_sup)
        + λ_cons L_cons`` (spec §4.4). The ramps ``r_c = min(1, epoch/8)``, ``r_s = min(1, epoch/5)`` arrive
        through the scheduled ``center_weight``, ``margin_weight``, ``sup_weight``.

        Parameters
        ----------
        tensors, inference_outputs, generative_outputs
            Minibatch and the module's outputs.
        kl_weight
            Ignored (scvi's KL warm-up); the view KL weights are fixed hyperparameters (0.001 / 0.1).
        prototype_weight
            Weight of the DEC clustering term ``λ_clust``.
        center_weight, margin_weight, sup_weight
            Current (ramped) weights of the centre, CosFace-margin and pseudo-label terms.

        Returns
        -------
        LossOutput
            ``loss``, ``reconstruction_loss`` (view-1 MSE), ``kl_local`` and the terms in ``extra_metrics``.
        """
        hp = self.hp
        io = inference_outputs
        x1 = io["v1"]
        mse1 = F.mse_loss(generative_outputs["x_hat"], x1, reduction="none").mean(1)
        kl1, kl2 = self._kl(io["mu1"], io["logvar1"]), self._kl(io["mu2"], io["logvar2"])
        l_vae = mse1.mean() + hp["kl_view1"] * kl1 + hp["kl_view2"] * kl2
        B = x1.shape[0]
        f1, f2 = io["z1"].reshape(B, -1), io["z2"].reshape(B, -1)
        zc = 0.5 * (f1 + f2)
        l1, l2, lc = self._logits(f1), self._logits(f2), self._logits(zc)
        q1, q2, q = l1.softmax(1), l2.softmax(1), lc.softmax(1)
        with torch.no_grad():
            f = q.sum(0) + 1e-8
            p = q.pow(2) / f
            p = p / p.sum(1, keepdim=True) + 1e-8
            p = p / p.sum(1, keepdim=True)
        l_clust = F.kl_div(lc.log_softmax(1), p, reduction="batchmean")
        zc_hat = F.normalize(zc, dim=1)
        C_hat = F.normalize(self.prototypes, dim=1)
        l_center = (p * torch.cdist(zc_hat, C_hat).pow(2)).sum(1).mean()
        sim = C_hat @ C_hat.t()
        off = ~torch.eye(self.n_prototypes, dtype=torch.bool, device=sim.device)
        l_rep = F.relu(sim[off] - hp["repulse_target"]).pow(2).mean()
        with torch.no_grad():
            conf, yhat = q.max(1)
            mask = conf >= hp["conf_thr"]
        if bool(mask.any()):
            lm = lc[mask] - hp["cosface_m"] * F.one_hot(yhat[mask], self.n_prototypes)
            l_margin = F.cross_entropy(lm, yhat[mask])
        else:
            l_margin = lc.sum() * 0.0
        y = self._labels(tensors)
        if y is not None and bool((y >= 0).any()):
            lab = y >= 0
            l_sup = F.cross_entropy(lc[lab], y[lab], label_smoothing=hp["label_eps"])
        else:
            l_sup = lc.sum() * 0.0
        lq1, lq2 = q1.clamp_min(1e-8).log(), q2.clamp_min(1e-8).log()
        l_cons = 0.5 * (
            F.kl_div(lq2, q1.clamp_min(1e-8), reduction="batchmean")
            + F.kl_div(lq1, q2.clamp_min(1e-8), reduction="batchmean")
        )
        total = (
            l_vae
            + prototype_weight * l_clust
            + center_weight * l_center
            + hp["lam_repulse"] * l_rep
            + margin_weight * l_margin
            + sup_weight * l_sup
            + hp["lam_cons"] * l_cons
        )
        if self.training:
            self._cache = {
                "zc_hat": zc_hat.detach(),
                "p": p.detach(),
                "yhat": q.argmax(1).detach(),
                "y": None if y is None else y.detach(),
            }
        extra = {
            "clust": l_clust.detach(),
            "center": l_center.detach(),
            "repulse": l_rep.detach(),
            "margin": l_margin.detach(),
            "sup": l_sup.detach(),
            "cons": l_cons.detach(),
            "frac_confident": mask.float().mean(),
        }
        return LossOutput(
            loss=total,
            reconstruction_loss=mse1,
            kl_local=torch.full_like(mse1, 0.0)
            + hp["kl_view1"] * kl1.detach()
            + hp["kl_view2"] * kl2.detach(),
            extra_metrics=extra,
        )

    # ------------------------------------------------------------------ training hooks (PrototypeTrainingPlan)
    def init_prototypes(self, z_flat: torch.Tensor, seed: int = 42) -> None:
        """Set the prototypes to ``K`` random (L2-normalised) rows of ``z_flat`` (with replacement if needed).

        Parameters
        ----------
        z_flat
            ``(B, (D+1)·d_token)`` flattened latents of one batch.
        seed
            Row-sampling seed.
        """
        g = torch.Generator().manual_seed(seed)
        n = z_flat.shape[0]
        idx = (
            torch.randperm(n, generator=g)[: self.n_prototypes]
            if n >= self.n_prototypes
            else torch.randint(0, n, (self.n_prototypes,), generator=g)
        )
        self.prototypes.data.copy_(F.normalize(z_flat[idx.to(z_flat.device)], dim=1))
        self.prototypes_initialized.fill_(True)

    def on_train_start(self, plan=None, **kwargs) -> None:
        """Lazy prototype initialisation from the first training batch (spec §4.4)."""
        if bool(self.prototypes_initialized):
            return
        batch = next(iter(plan.trainer.train_dataloader))
        was = self.training
        self.train()
        out = self.inference(**self._get_inference_input(batch))
        B = out["z1"].shape[0]
        self.init_prototypes(0.5 * (out["z1"].reshape(B, -1) + out["z2"].reshape(B, -1)))
        self.train(was)

    def on_train_batch_end(self, plan=None, **kwargs) -> None:
        """EMA prototype update (spec §4.5) from the cached ``ẑ_c`` and DEC target ``p`` of the step."""
        if not self._cache:
            return
        zc, p = self._cache["zc_hat"], self._cache["p"]
        new = F.normalize(p.t() @ zc / (p.sum(0)[:, None] + 1e-8), dim=1)
        m = self.hp["proto_ema_m"]
        self.prototypes.data.mul_(m).add_((1 - m) * new)
        y = self._cache.get("y")
        if y is not None and bool((y >= 0).any()):
            from sklearn.metrics import normalized_mutual_info_score

            lab = (y >= 0).cpu().numpy()
            self._nmi_steps.append(
                float(
                    normalized_mutual_info_score(y.cpu().numpy()[lab], self._cache["yhat"].cpu().numpy()[lab])
                )
            )
        self._cache = {}

    def on_train_epoch_end(self, plan=None, epoch: int = 0, **kwargs) -> None:
        """Log the epoch-mean train NMI vs the pseudo-labels and remember the best state (spec §4.6)."""
        if not self._nmi_steps:
            return
        nmi = float(np.mean(self._nmi_steps))
        self._nmi_steps = []
        if plan is not None:
            plan.log("nmi_pseudo_train", nmi, on_step=False, on_epoch=True)
        best = getattr(self, "_best", None)
        if best is None or nmi > best[0]:
            self._best = (
                nmi,
                int(epoch),
                {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
            )
