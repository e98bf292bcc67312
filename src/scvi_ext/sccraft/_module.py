"""scCRAFT's torch module: batch-free encoder, two-path NB decoder, batch discriminator (sccraft.md §3-§5)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from scvi_ext.nn import BatchDiscriminator, nb_log_prob
from scvi_ext.train import mine_triplets, triplet_loss

from ._constants import DEFAULTS, METRICS, REGISTRY_KEYS_SCCRAFT
from ._sampler import as_index_tensor


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers.append(nn.Linear(n_in, h))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        n_in = h
    if n_out > 0:
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class SCCRAFTEncoder(nn.Module):
    """Batch-free Gaussian encoder: ``Linear -> BN -> ReLU`` blocks, then mean and variance heads.

    Parameters
    ----------
    n_input
        Number of genes.
    n_latent
        Latent size.
    n_hidden
        Widths of the hidden layers (reference: 1024, 512).
    var_eps
        Variance floor added after ``exp`` (reference: 1e-4).

    Examples
    --------
    >>> enc = SCCRAFTEncoder(20, 4, n_hidden=(16, 8))
    >>> [t.shape for t in enc(torch.rand(5, 20))]
    [torch.Size([5, 4]), torch.Size([5, 4]), torch.Size([5, 4])]
    """

    def __init__(
        self, n_input: int, n_latent: int, n_hidden: tuple[int, ...], var_eps: float = DEFAULTS.VAR_EPS
    ):
        super().__init__()
        self.trunk = _mlp(n_input, tuple(n_hidden), 0, batch_norm=True)
        self.mean = nn.Linear(n_hidden[-1], n_latent)
        self.log_var = nn.Linear(n_hidden[-1], n_latent)
        self.var_eps = var_eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(mean, variance, reparameterised sample)``."""
        h = self.trunk(x)
        qz_m = self.mean(h)
        qz_v = torch.exp(self.log_var(h)) + self.var_eps
        z = qz_m + qz_v.sqrt() * torch.randn_like(qz_m)
        return qz_m, qz_v, z


class SCCRAFTDecoder(nn.Module):
    """Decoder ``f(ReLU(G1(z, v) + G2(v)))`` with cell x gene NB mean and inverse dispersion heads.

    The batch one-hot ``v`` is concatenated **after** ``z`` (the last ``K`` input columns of G1's first
    layer), so query batches can be appended by padding the last dimension (sccraft.md §3, §9.5).

    Parameters
    ----------
    n_latent
        Latent size.
    n_batch
        Number of batches ``K``.
    n_output
        Number of genes.
    n_hidden
        Hidden widths of G1 and G2 (reference: 512, 1024).

    Examples
    --------
    >>> dec = SCCRAFTDecoder(4, 2, 20, n_hidden=(8, 16))
    >>> mu, theta = dec(torch.randn(3, 4), torch.eye(2)[[0, 1, 1]])
    >>> mu.shape, bool((theta > 0).all())
    (torch.Size([3, 20]), True)
    """

    def __init__(self, n_latent: int, n_batch: int, n_output: int, n_hidden: tuple[int, ...]):
        super().__init__()
        self.g1 = _mlp(n_latent + n_batch, tuple(n_hidden), n_output, batch_norm=False)
        self.g2 = _mlp(n_batch, tuple(n_hidden), n_output, batch_norm=False)
        self.px_mu = nn.Linear(n_output, n_output)
        self.px_theta = nn.Linear(n_output, n_output)

    def forward(self, z: torch.Tensor, batch_onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return NB mean and inverse dispersion, both ``(N, n_output)``."""
        h = F.relu(self.g1(torch.cat([z, batch_onehot], dim=-1)) + self.g2(batch_onehot))
        return torch.exp(self.px_mu(h)), torch.exp(self.px_theta(h))


class SCCRAFTModule(BaseModuleClass):
    """scCRAFT VAE with its batch discriminator (He et al., Communications Biology 2025).

    Generator loss per minibatch (sccraft.md §4): ``mean_{cells, genes} min(-log NB(x; mu, theta), 1e5)
    + kl_weight * mean_cells KL + cos_weight * mean(1 - cos(x, mu)) + triplet_weight * L_tri``; the
    adversarial term is added by :class:`~scvi_ext.sccraft.SCCRAFTTrainingPlan` with
    :attr:`discriminator` (kept in the module so that ``save``/``load`` keep it).

    Parameters
    ----------
    n_input
        Number of genes.
    n_batch
        Number of batches (>= 2).
    n_latent
        Latent size (reference 256).
    n_hidden_encoder
        Encoder widths.
    n_hidden_decoder
        Widths of both decoder paths.
    n_hidden_discriminator, n_layers_discriminator
        Discriminator MLP.
    var_eps
        Encoder variance floor.

    Examples
    --------
    >>> m = SCCRAFTModule(30, 3, n_latent=4, n_hidden_encoder=(16, 8), n_hidden_decoder=(8, 16))
    >>> m.discriminator(torch.randn(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        n_input: int,
        n_batch: int,
        n_latent: int = DEFAULTS.N_LATENT,
        n_hidden_encoder: tuple[int, ...] = (1024, 512),
        n_hidden_decoder: tuple[int, ...] = (512, 1024),
        n_hidden_discriminator: int = 128,
        n_layers_discriminator: int = 2,
        var_eps: float = DEFAULTS.VAR_EPS,
    ):
        super().__init__()
        self.n_input = n_input
        self.n_batch = n_batch
        self.n_latent = n_latent
        self.encoder = SCCRAFTEncoder(n_input, n_latent, tuple(n_hidden_encoder), var_eps)
        self.decoder = SCCRAFTDecoder(n_latent, n_batch, n_input, tuple(n_hidden_decoder))
        self.discriminator = BatchDiscriminator(
            n_latent, n_batch, n_hidden=n_hidden_discriminator, n_layers=n_layers_discriminator
        )
        for mod in self.modules():  # reference init: BN weight ~ N(1, 0.02), bias 0
            if isinstance(mod, nn.BatchNorm1d):
                nn.init.normal_(mod.weight, 1.0, 0.02)
                nn.init.zeros_(mod.bias)

    # ------------------------------------------------------------------ scvi-tools interface
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor]:
        return {"z": inference_outputs["z"], "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY]}

    @auto_move_data
    def inference(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode ``x`` (log-normalised expression) into ``qz_m``, ``qz_v`` and a sample ``z``."""
        qz_m, qz_v, z = self.encoder(x)
        return {"qz_m": qz_m, "qz_v": qz_v, "z": z}

    @auto_move_data
    def generative(self, z: torch.Tensor, batch_index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode ``z`` under the batches ``batch_index`` into NB mean ``px_mu`` and ``px_theta``."""
        onehot = F.one_hot(as_index_tensor(batch_index), self.n_batch).to(z.dtype)
        px_mu, px_theta = self.decoder(z, onehot)
        return {"px_mu": px_mu, "px_theta": px_theta}

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict[str, torch.Tensor],
        kl_weight: float = DEFAULTS.KL_COEF,
        triplet_weight: float = DEFAULTS.TRIPLET_COEF,
        cos_weight: float = DEFAULTS.COS_COEF,
        margin: float = DEFAULTS.MARGIN,
        n_triplets_per_cluster: int = DEFAULTS.N_TRIPLETS_PER_CLUSTER,
        squared_triplet: bool = False,
        negative_sampling: Literal["cell", "cluster"] = "cell",
    ) -> LossOutput:
        """Reconstruction (NB + cosine), KL and dual-resolution triplet terms (sccraft.md §4, §5).

        Parameters
        ----------
        tensors
            Minibatch (needs ``X``, ``batch`` and, for the triplet term, the two cluster codes).
        inference_outputs, generative_outputs
            Outputs of :meth:`inference` and :meth:`generative`.
        kl_weight
            KL weight (``kl_coef``, 0.005).
        triplet_weight
            Triplet weight (lambda_T, 1); ``0`` skips the mining.
        cos_weight
            Cosine term weight (lambda_cos, 20).
        margin
            Triplet margin (5).
        n_triplets_per_cluster
            Pairs drawn per (batch, low cluster) group (15).
        squared_triplet
            Squared distances (paper eq. 5) instead of plain ones (reference).
        negative_sampling
            ``"cell"`` (reference) or ``"cluster"`` (paper text).

        Returns
        -------
        scvi.module.base.LossOutput
            ``loss`` = generator objective without the adversarial term; per-cell NB NLL and KL;
            extra metrics ``nb_nll``, ``cosine_loss``, ``triplet_loss``, ``n_triplets``.
        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        qz_m, qz_v, z = inference_outputs["qz_m"], inference_outputs["qz_v"], inference_outputs["z"]
        px_mu, px_theta = generative_outputs["px_mu"], generative_outputs["px_theta"]

        nll = torch.clamp(-nb_log_prob(x, px_mu, px_theta, eps=DEFAULTS.NB_EPS), max=DEFAULTS.NLL_CLAMP)
        rec_cell = nll.mean(dim=1)  # per cell; the mean over cells x genes is rec_cell.mean()
        kl_cell = 0.5 * (qz_v + qz_m.pow(2) - 1.0 - torch.log(qz_v)).sum(dim=1)
        cos = (1.0 - (F.normalize(px_mu, dim=1) * F.normalize(x, dim=1)).sum(dim=1)).mean()

        tri = z.sum() * 0.0
        n_trip = 0
        has_labels = REGISTRY_KEYS_SCCRAFT.LOW_KEY in tensors and REGISTRY_KEYS_SCCRAFT.HIGH_KEY in tensors
        if float(triplet_weight) != 0.0 and has_labels:
            a, p, n = mine_triplets(
                None,
                as_index_tensor(tensors[REGISTRY_KEYS.BATCH_KEY]),
                as_index_tensor(tensors[REGISTRY_KEYS_SCCRAFT.LOW_KEY]),
                fine_ids=as_index_tensor(tensors[REGISTRY_KEYS_SCCRAFT.HIGH_KEY]),
                strategy="sccraft",
                n_per_cluster=int(n_triplets_per_cluster),
                negative_sampling=negative_sampling,
            )
            n_trip = int(a.shape[0])
            if n_trip > 0:
                a, p, n = (t.to(z.device) for t in (a, p, n))
                tri = triplet_loss(z[a], z[p], z[n], margin=float(margin), squared=bool(squared_triplet))

        loss = rec_cell.mean() + kl_weight * kl_cell.mean() + cos_weight * cos + triplet_weight * tri
        return LossOutput(
            loss=loss,
            reconstruction_loss=rec_cell,
            kl_local=kl_cell,
            extra_metrics={
                METRICS.RECONSTRUCTION: rec_cell.mean().detach(),
                METRICS.COSINE: cos.detach(),
                METRICS.TRIPLET: tri.detach(),
                METRICS.N_TRIPLETS: torch.tensor(float(n_trip)),
            },
        )
