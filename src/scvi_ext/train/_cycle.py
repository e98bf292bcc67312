"""Latent cycle-consistency pieces (sysVI, sysvi.md §1.5 and §2)."""

from __future__ import annotations

import torch


def cycle_latent_distance(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    standardize: bool = True,
    unbiased: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Per-cell squared distance between two latent codes, on jointly standardised dimensions.

    With ``standardize=True`` (sysVI): pool ``[z_a; z_b]`` (``2B`` rows), compute each latent dimension's
    standard deviation over the pool (unbiased by default, *with* gradient), divide both inputs by it
    and return ``sum_l ((z_a - z_b) / sd_l)^2`` per cell. Standardising prevents the trivial solution
    of shrinking the latent scale; the pooled mean cancels in the difference. Use posterior means
    (``qz.loc`` and the re-encoded ``qz_cycle.loc``), as sysVI does.

    Parameters
    ----------
    z_a, z_b
        ``(B, L)`` latent codes of the same cells (original and cycle).
    standardize
        Divide by the pooled per-dimension standard deviation (``False``: plain squared distance).
    unbiased
        Use the unbiased (``n - 1``) standard deviation, as scvi-tools' SysVI does.
    eps
        Floor on the standard deviation (only matters for constant dimensions, which would give 0/0).

    Returns
    -------
    torch.Tensor
        ``(B,)`` distances; the sysVI cycle loss is their mean times the cycle weight.

    Examples
    --------
    >>> z = torch.randn(8, 3)
    >>> float(cycle_latent_distance(z, z).abs().max())
    0.0
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(
            f"z_a and z_b must both have shape (B, L); got {tuple(z_a.shape)} and {tuple(z_b.shape)}."
        )
    diff = z_a - z_b
    if standardize:
        pooled = torch.cat([z_a, z_b], dim=0)
        sd = pooled.std(dim=0, keepdim=True, unbiased=unbiased).clamp_min(eps)
        diff = diff / sd
    return diff.pow(2).sum(dim=-1)


def random_other_category(
    index: torch.Tensor, n_categories: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """For each cell, draw a category uniformly among the ``n_categories - 1`` *other* categories.

    Used to switch the system covariate in sysVI's cycle (sysvi.md §1.5, A6).

    Parameters
    ----------
    index
        Category codes, shape ``(B,)`` or ``(B, 1)`` (float codes are accepted).
    n_categories
        Number of categories (``>= 2``).
    generator
        Optional torch RNG (draws happen on its device, then move to ``index``'s).

    Returns
    -------
    torch.Tensor
        Long tensor with the shape of ``index``; never equal to ``index``.

    Examples
    --------
    >>> idx = torch.tensor([[0], [1], [2]])
    >>> bool((random_other_category(idx, 3) != idx).all())
    True
    """
    if n_categories < 2:
        raise ValueError(f"n_categories must be >= 2 to switch to another category, got {n_categories}.")
    idx = index.long()
    if idx.numel() and (idx.min() < 0 or idx.max() >= n_categories):
        raise ValueError(f"index has codes outside [0, {n_categories}).")
    device = idx.device if generator is None else generator.device
    draw = torch.randint(0, n_categories - 1, idx.shape, device=device, generator=generator).to(idx.device)
    return draw + (draw >= idx).long()
