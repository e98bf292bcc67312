"""Registry entry point: sysVI on an AnnData prepared by :func:`scvi_ext.methods.prepare`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData


def run_sysvi(
    adata: AnnData,
    batch_key: str,
    *,
    max_epochs: int | None = None,
    accelerator: str = "auto",
    progress_bar: bool = True,
    seed: int = 0,
    categorical_covariate_keys: Sequence[str] | None = None,
    cycle_weight: float | None = None,
    plan_kwargs: dict | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Train :class:`~scvi_ext.sysvi.SysVI` on the log-normalised ``X`` of a prepared AnnData.

    Parameters
    ----------
    adata
        Output of :func:`scvi_ext.methods.prepare` (log-normalised HVGs in ``X``); not modified.
    batch_key
        The system column (cycle-switched covariate).
    max_epochs
        ``None``: scvi-tools' heuristic (400 epochs below 20k cells).
    accelerator
        Lightning accelerator.
    progress_bar
        Show the Lightning progress bar.
    seed
        ``scvi.settings.seed``.
    categorical_covariate_keys
        Extra conditions (e.g. sample), never switched.
    cycle_weight
        ``z_distance_cycle_weight`` (default 2).
    plan_kwargs
        More training-plan arguments.
    **kwargs
        Passed to :class:`~scvi_ext.sysvi.SysVI` (``prior``, ``fidelity``, ``n_latent``, ...).

    Returns
    -------
    numpy.ndarray
        Posterior means, cells x ``n_latent`` (15).

    Examples
    --------
    >>> emb = run_sysvi(prepared, "species", categorical_covariate_keys=["sample"], max_epochs=5)  # doctest: +SKIP
    """
    import scvi

    from ._model import SysVI

    scvi.settings.seed = seed
    ad = adata.copy()
    SysVI.setup_anndata(
        ad, batch_key=batch_key, categorical_covariate_keys=list(categorical_covariate_keys or []) or None
    )
    model = SysVI(ad, **kwargs)
    plan_kwargs = dict(plan_kwargs or {})
    if cycle_weight is not None:
        plan_kwargs["z_distance_cycle_weight"] = float(cycle_weight)
    model.train(
        max_epochs=max_epochs,
        accelerator=accelerator,
        enable_progress_bar=progress_bar,
        plan_kwargs=plan_kwargs,
    )
    return np.asarray(model.get_latent_representation(), dtype=np.float32)
