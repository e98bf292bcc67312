"""Baseline methods every benchmark compares against: PCA, Harmony and scVI."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._constants import OBSM_KEYS
from ._preprocess import COUNTS_LAYER

if TYPE_CHECKING:
    from anndata import AnnData


def run_pca(adata: AnnData, batch_key: str, **kwargs) -> np.ndarray:
    """Return the unintegrated PCA of a :func:`prepare`-d AnnData (the "no integration" baseline).

    Examples
    --------
    >>> emb = run_pca(prepared, "lane")  # doctest: +SKIP
    """
    return np.asarray(adata.obsm[OBSM_KEYS.PCA], dtype=np.float32)


def run_harmony(adata: AnnData, batch_key: str, *, seed: int = 0, **kwargs) -> np.ndarray:
    """Harmony (harmonypy) on the PCA of a :func:`prepare`-d AnnData.

    Needs the ``bench`` extra (``pip install 'scvi-ext[bench]'``).

    Examples
    --------
    >>> emb = run_harmony(prepared, "lane")  # doctest: +SKIP
    """
    try:
        import harmonypy
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Harmony needs harmonypy: pip install 'scvi-ext[bench]'") from err
    ho = harmonypy.run_harmony(
        adata.obsm[OBSM_KEYS.PCA], adata.obs[[batch_key]], [batch_key], verbose=False, random_state=seed
    )
    Z = np.asarray(ho.Z_corr, dtype=np.float32)
    return Z if Z.shape[0] == adata.n_obs else Z.T


def run_scvi(
    adata: AnnData,
    batch_key: str,
    *,
    max_epochs: int | None = None,
    accelerator: str = "auto",
    progress_bar: bool = True,
    seed: int = 0,
    **kwargs,
) -> np.ndarray:
    """scVI (``scvi.model.SCVI`` at its defaults) on the counts of a :func:`prepare`-d AnnData.

    Parameters
    ----------
    adata
        Output of :func:`prepare`.
    batch_key
        Batch column.
    max_epochs
        ``None`` keeps scvi-tools' heuristic (400 epochs below 20k cells).
    accelerator
        Lightning accelerator (``"cpu"``, ``"gpu"``, ``"auto"``).
    progress_bar
        Show the Lightning progress bar.
    seed
        ``scvi.settings.seed``.
    **kwargs
        Passed to ``scvi.model.SCVI``.

    Returns
    -------
    numpy.ndarray
        Posterior-mean latent, cells x 10.

    Examples
    --------
    >>> emb = run_scvi(prepared, "lane", max_epochs=5)  # doctest: +SKIP
    """
    import scvi

    scvi.settings.seed = seed
    ad = adata.copy()
    scvi.model.SCVI.setup_anndata(ad, layer=COUNTS_LAYER, batch_key=batch_key)
    model = scvi.model.SCVI(ad, **kwargs)
    model.train(max_epochs=max_epochs, accelerator=accelerator, enable_progress_bar=progress_bar)
    return np.asarray(model.get_latent_representation(), dtype=np.float32)
