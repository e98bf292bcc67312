"""Registry entry point and the reference's function names as thin wrappers (sccraft.md §9.1-§9.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._clustering import multi_resolution_cluster as _cluster
from ._constants import DEFAULTS, OBS_KEYS, OBSM_KEYS
from ._model import SCCRAFT

if TYPE_CHECKING:
    from anndata import AnnData


def run_sccraft(
    adata: AnnData,
    batch_key: str,
    *,
    max_epochs: int | None = None,
    accelerator: str = "auto",
    progress_bar: bool = True,
    seed: int = 0,
    warmup_epochs: int | None = None,
    resolution_low: float = DEFAULTS.RESOLUTION_LOW,
    resolution_high: float = DEFAULTS.RESOLUTION_HIGH,
    model_kwargs: dict | None = None,
    **train_kwargs: Any,
) -> np.ndarray:
    """scCRAFT on a :func:`scvi_ext.methods.prepare`-d AnnData: cluster, train, return the latent mean.

    Works on a copy: Leiden pseudo-labels at two resolutions on the log-normalised ``X``, then
    :class:`~scvi_ext.sccraft.SCCRAFT` at its defaults.

    Parameters
    ----------
    adata
        Output of :func:`scvi_ext.methods.prepare` (log-normalised HVGs in ``X``).
    batch_key
        Batch column.
    max_epochs
        ``None``: 150 (auto-scaled above 100k cells). An epoch draws 512 cells per batch.
    accelerator
        Lightning accelerator.
    progress_bar
        Show the progress bar.
    seed
        Seed of model initialisation, sampler and latent noise (``scvi.settings.seed``).
    warmup_epochs
        Adversarial warm-up; ``None``: 50, or ``max_epochs // 3`` for shorter runs.
    resolution_low, resolution_high
        Clustering resolutions.
    model_kwargs
        Passed to :class:`~scvi_ext.sccraft.SCCRAFT`.
    **train_kwargs
        Passed to :meth:`SCCRAFT.train`.

    Returns
    -------
    numpy.ndarray
        Posterior-mean latent, cells x 256.

    Examples
    --------
    >>> emb = run_sccraft(prepared, "lane", max_epochs=5)  # doctest: +SKIP
    """
    import scvi

    scvi.settings.seed = seed
    ad = adata.copy()
    _cluster(ad, resolution_low, resolution_high, random_state=seed)
    SCCRAFT.setup_anndata(ad, batch_key=batch_key)
    model = SCCRAFT(ad, **(model_kwargs or {}))
    model.train(
        max_epochs=max_epochs,
        warmup_epochs=warmup_epochs,
        accelerator=accelerator,
        progress_bar=progress_bar,
        seed=seed,
        **train_kwargs,
    )
    return model.get_latent_representation()


def multi_resolution_cluster(
    adata: AnnData, resolution1: float = 0.5, resolution2: float = 7, method: str = "Leiden"
) -> None:
    """The reference's ``multi_resolution_cluster`` (writes ``obs['leiden1']``, ``obs['leiden2']``).

    Defaults to Leiden (the reference's Louvain default is broken with igraph >= 1.0; sccraft.md §10).

    Parameters
    ----------
    adata
        Log-normalised HVG AnnData.
    resolution1, resolution2
        Low and high resolution.
    method
        ``"Leiden"`` or ``"Louvain"`` (case-insensitive).

    Returns
    -------
    None
        ``adata`` is modified in place.

    Examples
    --------
    >>> multi_resolution_cluster(adata, resolution1=0.5, resolution2=7, method="Leiden")  # doctest: +SKIP
    """
    _cluster(adata, resolution1, resolution2, method=method.lower())


def train_integration_model(
    adata: AnnData,
    batch_key: str = "batch",
    z_dim: int = DEFAULTS.N_LATENT,
    epochs: int = DEFAULTS.MAX_EPOCHS,
    d_coef: float = DEFAULTS.D_COEF,
    kl_coef: float = DEFAULTS.KL_COEF,
    warmup_epoch: int = DEFAULTS.WARMUP_EPOCHS,
    **train_kwargs: Any,
) -> SCCRAFT:
    """The reference's ``train_integration_model``, returning a trained :class:`SCCRAFT`.

    Registers ``adata`` (``X``, ``batch_key``, ``obs['leiden1'/'leiden2']``). As in the reference,
    ``epochs=150`` is raised to about 1.5 passes over the data above 100k cells.

    Parameters
    ----------
    adata
        Log-normalised HVG AnnData with the two cluster columns.
    batch_key
        Batch column.
    z_dim
        Latent size.
    epochs
        Epochs.
    d_coef, kl_coef
        Adversarial and KL weights.
    warmup_epoch
        Adversarial warm-up epochs.
    **train_kwargs
        Passed to :meth:`SCCRAFT.train` (e.g. ``progress_bar=False``).

    Returns
    -------
    SCCRAFT
        The trained model (use it with :func:`obtain_embeddings`).

    Examples
    --------
    >>> model = train_integration_model(adata, batch_key="batch", epochs=50, warmup_epoch=16)  # doctest: +SKIP
    """
    SCCRAFT.setup_anndata(adata, batch_key=batch_key, low_res_key=OBS_KEYS.LOW, high_res_key=OBS_KEYS.HIGH)
    model = SCCRAFT(adata, n_latent=z_dim)
    max_epochs = None if epochs == DEFAULTS.MAX_EPOCHS else epochs
    model.train(
        max_epochs=max_epochs, warmup_epochs=warmup_epoch, d_coef=d_coef, kl_coef=kl_coef, **train_kwargs
    )
    return model


def obtain_embeddings(
    adata: AnnData,
    model: SCCRAFT,
    dim: int = DEFAULTS.N_PCS_OUTPUT,
    pca: bool = True,
    seed: int | None = None,
) -> AnnData:
    """The reference's ``obtain_embeddings``: a latent *sample* (eval-mode BN), PCA to ``dim``, in ``obsm``.

    Parameters
    ----------
    adata
        AnnData with the model's genes.
    model
        Trained :class:`SCCRAFT`.
    dim
        PCA components.
    pca
        Reduce by PCA (otherwise the ``n_latent``-dim sample is stored).
    seed
        Seed of the sample.

    Returns
    -------
    anndata.AnnData
        ``adata`` with ``obsm['X_scCRAFT']``.

    Examples
    --------
    >>> obtain_embeddings(adata, model)  # doctest: +SKIP
    >>> adata.obsm["X_scCRAFT"].shape[1]  # doctest: +SKIP
    50
    """
    adata.obsm[OBSM_KEYS.LATENT] = model.get_latent_representation(
        adata, give_mean=False, n_pcs=dim if pca else None, seed=seed
    )
    return adata
