"""Registry entry of scBIOT for the CLI, the demo and the benchmark runner."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._constants import KEYS
from ._model import SCBIOT, pseudo_labels
from ._ot_refine import integrate

if TYPE_CHECKING:
    from anndata import AnnData

DEFAULT_EPOCHS = 80
DESCRIPTION = "scBIOT: unbalanced-OT refinement of the PCA + dual-view prototype VAE (scBIOT paper)"


def run_scbiot(
    adata: AnnData,
    batch_key: str,
    *,
    max_epochs: int | None = None,
    accelerator: str = "auto",
    progress_bar: bool = True,
    seed: int = 0,
    output: str = "vae",
    resolution: float = 0.8,
    n_components: int = 30,
    **kwargs,
) -> np.ndarray:
    """scBIOT on a :func:`scvi_ext.methods.prepare`-d AnnData: ``integrate(rna)`` on ``X_pca`` → Leiden
    pseudo-labels → :class:`SCBIOT` → fused latent (the paper's pipeline, spec §1).

    Parameters
    ----------
    adata
        Prepared AnnData (``obsm['X_pca']``); a private copy is used, ``adata`` is not modified.
    batch_key
        Batch column.
    max_epochs
        VAE epochs (default 80).
    accelerator, progress_bar
        Lightning settings.
    seed
        Seed of the OT refinement and of scvi-tools.
    output
        ``"vae"`` (fused VAE latent, default) or ``"ot"`` (part A only: the OT-refined PCA).
    resolution
        Leiden resolution of the pseudo-labels.
    n_components
        Width of the VAE latent (PCA of the fused posterior).
    **kwargs
        Passed to :func:`scvi_ext.scbiot.integrate` (OT parameters).

    Returns
    -------
    numpy.ndarray
        The embedding ``(n_obs, n_components)`` (or ``(n_obs, n_pcs)`` for ``output="ot"``).

    Examples
    --------
    >>> emb = run_scbiot(prepared, "lane", max_epochs=10)  # doctest: +SKIP
    """
    import scvi

    if output not in ("vae", "ot"):
        raise ValueError(f"output must be 'vae' or 'ot', got {output!r}.")
    a = adata.copy()
    integrate(
        a, "rna", obsm_key="X_pca", batch_key=batch_key, out_key=KEYS.OT_OUT, random_state=seed, **kwargs
    )
    if output == "ot":
        return np.asarray(a.obsm[KEYS.OT_OUT], dtype=np.float32)
    scvi.settings.seed = seed
    pseudo_labels(a, KEYS.OT_OUT, resolution=resolution, random_state=seed)
    SCBIOT.setup_anndata(a, KEYS.OT_OUT, batch_key, pseudo_label_key=KEYS.PSEUDO)
    model = SCBIOT(a)
    model.train(
        max_epochs=max_epochs or DEFAULT_EPOCHS, accelerator=accelerator, enable_progress_bar=progress_bar
    )
    return model.get_latent_representation(n_components=n_components)


def run_scbiot_ot(adata: AnnData, batch_key: str, *, seed: int = 0, **kwargs) -> np.ndarray:
    """scBIOT part A only: the ``"rna"`` preset of :func:`~scvi_ext.scbiot.integrate` on ``obsm['X_pca']``.

    Parameters
    ----------
    adata
        Output of :func:`scvi_ext.methods.prepare` (not modified).
    batch_key
        Batch column.
    seed
        Random state of the refinement.
    **kwargs
        Passed to :func:`~scvi_ext.scbiot.integrate`.

    Returns
    -------
    numpy.ndarray
        The refined embedding, cells x n_pcs.

    Examples
    --------
    >>> emb = run_scbiot_ot(prepared, "lane")  # doctest: +SKIP
    """
    return run_scbiot(adata, batch_key, seed=seed, output="ot", **kwargs)
