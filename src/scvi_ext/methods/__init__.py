"""One registry of integration methods for the CLI, the demo and the benchmark runner.

Each entry takes an AnnData prepared by :func:`prepare` (counts in ``layers['counts']``, log-normalised
``X``, ``obsm['X_pca']``) and returns an embedding (cells x dims). Method issues add their model here with
:func:`register_method`.

Examples
--------
>>> from scvi_ext.methods import METHODS, integrate
>>> sorted(METHODS)  # doctest: +SKIP
['harmony', 'pca', 'scvi']
>>> out = integrate(adata, "harmony", batch_key="lane")  # doctest: +SKIP
>>> out.obsm["X_harmony"].shape  # doctest: +SKIP
(700, 30)
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .._constants import DEFAULTS, UNS_KEYS, latent_key
from ._baselines import run_harmony, run_pca, run_scvi
from ._preprocess import COUNTS_LAYER, prepare

if TYPE_CHECKING:
    from anndata import AnnData


@dataclass(frozen=True)
class Method:
    """An integration method known to the CLI and the benchmark runner.

    Attributes
    ----------
    name
        Registry name (``--method`` on the command line).
    run
        ``run(prepared_adata, batch_key, **kwargs) -> embedding``.
    description
        One line for ``scvi-ext integrate --help`` and the README table.
    trains
        Whether the method trains a model (``max_epochs``/``accelerator`` apply).
    """

    name: str
    run: Callable[..., np.ndarray]
    description: str
    trains: bool = False


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (replacing an entry of the same name) and return it.

    Examples
    --------
    >>> register_method(Method("pca_copy", run_pca, "PCA again"))  # doctest: +SKIP
    """
    METHODS[method.name] = method
    return method


def lazy_runner(module: str, name: str) -> Callable[..., np.ndarray]:
    """Return a runner that imports ``module.name`` on first call (keeps ``import scvi_ext.methods`` light).

    Examples
    --------
    >>> run = lazy_runner("scvi_ext.methods._baselines", "run_pca")
    """

    def run(*args, **kwargs) -> np.ndarray:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    run.__name__ = name
    run.__qualname__ = name
    run.__wrapped__ = lambda: getattr(importlib.import_module(module), name)
    return run


register_method(Method("pca", run_pca, "unintegrated PCA of log-normalised HVGs (baseline)"))
register_method(Method("harmony", run_harmony, "Harmony on the PCA (harmonypy; baseline)"))
register_method(Method("scvi", run_scvi, "scVI (scvi-tools defaults; baseline)", trains=True))
register_method(
    Method(
        "piano",
        lazy_runner("scvi_ext.piano._integrate", "run_piano"),
        "PIANO: VAE with a negative-binomial GLM over all covariates, fast device-resident training (200 epochs)",
        trains=True,
    )
)
register_method(
    Method(
        "sysvi",
        lazy_runner("scvi_ext.sysvi._integrate", "run_sysvi"),
        "sysVI: cVAE + VampPrior + latent cycle-consistency on log-normalised X (batch_key = system)",
        trains=True,
    )
)
register_method(
    Method(
        "sccraft",
        lazy_runner("scvi_ext.sccraft._integrate", "run_sccraft"),
        "scCRAFT: VAE + K-way latent batch discriminator + dual-resolution triplet loss (150 epochs)",
        trains=True,
    )
)
register_method(
    Method(
        "uniport",
        lazy_runner("scvi_ext.uniport._integrate", "run_uniport"),
        "uniPort: coupled VAE + minibatch unbalanced OT, one dataset per batch (1,500 iterations)",
        trains=True,
    )
)
register_method(
    Method(
        "scbiot",
        lazy_runner("scvi_ext.scbiot._integrate", "run_scbiot"),
        "scBIOT: unbalanced-OT refinement of the PCA + dual-view prototype VAE (80 epochs)",
        trains=True,
    )
)
register_method(
    Method(
        "scbiot_ot",
        lazy_runner("scvi_ext.scbiot._integrate", "run_scbiot_ot"),
        "scBIOT part A only: batch-aware unbalanced-OT refinement of the PCA (no training)",
    )
)


def get_method(name: str) -> Method:
    """Return the registered method called ``name`` or raise a ``ValueError`` listing the choices.

    Examples
    --------
    >>> get_method("pca").name
    'pca'
    """
    if name not in METHODS:
        raise ValueError(f"method={name!r} is not available; choose one of {sorted(METHODS)}.")
    return METHODS[name]


def integrate(
    adata: AnnData,
    method: str,
    batch_key: str,
    *,
    layer: str | None = None,
    max_epochs: int | None = None,
    seed: int = DEFAULTS.SEED,
    accelerator: str = "auto",
    progress_bar: bool = True,
    n_hvg: int = DEFAULTS.N_HVG,
    n_pcs: int = DEFAULTS.N_PCS,
    prepared: AnnData | None = None,
    **method_kwargs,
) -> AnnData:
    """Preprocess ``adata`` (unless ``prepared`` is given) and run one method on it.

    Parameters
    ----------
    adata
        AnnData with raw counts in ``X`` or ``layers[layer]``; not modified.
    method
        A name in :data:`METHODS`.
    batch_key
        Batch column of ``adata.obs``.
    layer
        Counts layer; ``None`` for ``X``.
    max_epochs
        Training epochs for trained methods (``None``: the method's default).
    seed
        Random seed.
    accelerator
        Lightning accelerator for trained methods.
    progress_bar
        Show training progress.
    n_hvg, n_pcs
        Preprocessing settings (see :func:`prepare`).
    prepared
        Output of :func:`prepare` to reuse across methods.
    **method_kwargs
        Passed to the method.

    Returns
    -------
    AnnData
        The prepared AnnData with the embedding in ``obsm['X_<method>']`` and timing/parameters in
        ``uns['scvi_ext'][<method>]``.

    Examples
    --------
    >>> out = integrate(adata, "pca", batch_key="lane")  # doctest: +SKIP
    """
    spec = get_method(method)
    ad = prepared if prepared is not None else prepare(adata, batch_key, layer=layer, n_hvg=n_hvg, n_pcs=n_pcs, seed=seed)
    kwargs = dict(method_kwargs)
    if spec.trains:
        kwargs.update(max_epochs=max_epochs, accelerator=accelerator, progress_bar=progress_bar)
    t0 = time.perf_counter()
    emb = spec.run(ad, batch_key, seed=seed, **kwargs)
    seconds = time.perf_counter() - t0
    emb = np.asarray(emb, dtype=np.float32)
    if emb.shape[0] != ad.n_obs or not np.isfinite(emb).all():
        raise RuntimeError(f"method {method!r} returned an invalid embedding of shape {emb.shape}")
    ad.obsm[latent_key(method)] = emb
    info = ad.uns.setdefault(UNS_KEYS.SCVI_EXT, {})
    info[method] = {"seconds": seconds, "batch_key": batch_key, "seed": seed, "max_epochs": max_epochs or -1}
    return ad


__all__ = [
    "COUNTS_LAYER",
    "METHODS",
    "Method",
    "get_method",
    "integrate",
    "lazy_runner",
    "prepare",
    "register_method",
]
