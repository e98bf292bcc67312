"""Entry point for the suite's method registry (CLI ``integrate`` / ``demo`` / ``benchmark``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData

DESCRIPTION = "PIANO: VAE with a negative-binomial GLM over all covariates, fast device-resident training"


def run_piano(
    adata: AnnData,
    batch_key: str,
    *,
    max_epochs: int | None = None,
    accelerator: str = "auto",
    progress_bar: bool = True,
    seed: int = 0,
    categorical_covariate_keys: Sequence[str] | None = None,
    continuous_covariate_keys: Sequence[str] | None = None,
    **kwargs,
) -> np.ndarray:
    """PIANO on the counts of a :func:`scvi_ext.methods.prepare`-d AnnData; returns the posterior-mean latent.

    Parameters
    ----------
    adata
        Output of :func:`scvi_ext.methods.prepare` (counts in ``layers['counts']``).
    batch_key
        Batch column (a categorical covariate).
    max_epochs
        Epochs (``None``: :func:`~scvi_ext.piano.default_max_epochs`, 200 except on small data).
    accelerator
        ``"auto"``, ``"cpu"`` or ``"cuda"``/``"gpu"``.
    progress_bar
        Show the epoch bar.
    seed
        Seed of scvi-tools / torch and of the fast loop's shuffling.
    categorical_covariate_keys, continuous_covariate_keys
        Extra covariates (e.g. ``["species"]``).
    **kwargs
        Passed to :class:`~scvi_ext.piano.PIANO` (``n_latent``, ``adversarial``, ...); ``plan_kwargs`` goes to
        ``train``.

    Returns
    -------
    numpy.ndarray
        Cells x ``n_latent`` (32) embedding.

    Examples
    --------
    >>> emb = run_piano(prepared, "lane", max_epochs=5)  # doctest: +SKIP
    """
    import scvi

    from ..methods._preprocess import COUNTS_LAYER
    from ._model import PIANO

    scvi.settings.seed = seed
    plan_kwargs = kwargs.pop("plan_kwargs", None)
    ad = adata.copy()
    layer = COUNTS_LAYER if COUNTS_LAYER in ad.layers else None
    PIANO.setup_anndata(
        ad,
        layer=layer,
        batch_key=batch_key,
        categorical_covariate_keys=list(categorical_covariate_keys) if categorical_covariate_keys else None,
        continuous_covariate_keys=list(continuous_covariate_keys) if continuous_covariate_keys else None,
    )
    model = PIANO(ad, **kwargs)
    model.train(
        max_epochs=max_epochs,  # None: PIANO's default (200, more on small data)
        accelerator=accelerator,
        progress_bar=progress_bar,
        seed=seed,
        plan_kwargs=plan_kwargs,
    )
    return np.asarray(model.get_latent_representation(), dtype=np.float32)
