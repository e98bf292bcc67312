"""Registry entry point: uniPort on an AnnData prepared by :func:`scvi_ext.methods.prepare`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData

from ._constants import KEYS

DEFAULT_ITERATIONS = 1500
"""Minibatch steps used by the registry/benchmarks (``../shared/reference-results.md`` ran 1,500 of the
reference's 30,000 on CPU)."""


def run_uniport(
    adata: AnnData,
    batch_key: str,
    *,
    max_epochs: int | None = None,
    accelerator: str = "auto",
    progress_bar: bool = True,
    seed: int = 0,
    max_iterations: int = DEFAULT_ITERATIONS,
    **kwargs,
) -> np.ndarray:
    """uniPort-cm (mode ``h``, common features only) on a :func:`scvi_ext.methods.prepare`-d AnnData.

    Inputs are the log-normalised HVGs in ``X`` MaxAbs-scaled per batch (spec §2); each batch is a dataset
    and the last batch category is the OT reference.

    Parameters
    ----------
    adata
        Output of :func:`scvi_ext.methods.prepare` (not modified).
    batch_key
        Batch column; every batch is one uniPort dataset.
    max_epochs
        Epochs; ``None`` derives them from ``max_iterations``.
    accelerator
        Lightning accelerator.
    progress_bar
        Show the Lightning progress bar.
    seed
        ``scvi.settings.seed``.
    max_iterations
        Minibatch steps when ``max_epochs`` is ``None`` (1,500).
    **kwargs
        :class:`~scvi_ext.uniport.UniPort` init arguments and ``train`` arguments (``early_stopping``, ...).

    Returns
    -------
    numpy.ndarray
        Latent means, cells x 16.

    Examples
    --------
    >>> emb = run_uniport(prepared, "lane", max_iterations=200)  # doctest: +SKIP
    """
    import scipy.sparse as sp

    from ._model import UniPort

    scvi.settings.seed = seed
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    X = np.asarray(X, dtype=np.float32).copy()
    batches = adata.obs[batch_key].astype(str).to_numpy()
    for b in np.unique(batches):
        rows = batches == b
        m = np.abs(X[rows]).max(0)
        X[rows] = X[rows] / np.where(m > 0, m, 1.0)
    ad = AnnData(
        X, obs=pd.DataFrame(index=adata.obs_names.copy()), var=pd.DataFrame(index=adata.var_names.copy())
    )
    cats = (
        list(adata.obs[batch_key].cat.categories)
        if hasattr(adata.obs[batch_key], "cat")
        else sorted(set(batches))
    )
    seen = set(batches)
    ad.obs[KEYS.SOURCE_OBS] = pd.Categorical(batches, categories=[str(c) for c in cats if str(c) in seen])
    train_keys = {"early_stopping", "early_stopping_patience", "batch_size", "lr", "weight_decay", "save_ot"}
    train_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in train_keys}
    UniPort.setup_anndata(ad, source_key=KEYS.SOURCE_OBS)
    model = UniPort(ad, **kwargs)
    model.train(
        max_iterations=max_iterations,
        max_epochs=max_epochs,
        accelerator=accelerator,
        enable_progress_bar=progress_bar,
        **train_kwargs,
    )
    return model.get_latent_representation()
