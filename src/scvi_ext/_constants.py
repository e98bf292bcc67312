"""Keys shared across the suite: registry keys, ``obsm``/``uns`` names, default settings."""

from __future__ import annotations

from typing import NamedTuple


class _ObsmKeys(NamedTuple):
    PCA: str = "X_pca"
    UMAP: str = "X_umap"


class _UnsKeys(NamedTuple):
    SCVI_EXT: str = "scvi_ext"  # provenance written by the CLI / demo: method, params, timings


class _Defaults(NamedTuple):
    N_PCS: int = 30
    N_HVG: int = 2000
    TARGET_SUM: float = 1e4
    SEED: int = 0
    N_NEIGHBORS: int = 15


OBSM_KEYS = _ObsmKeys()
UNS_KEYS = _UnsKeys()
DEFAULTS = _Defaults()


def latent_key(method: str) -> str:
    """Return the ``obsm`` key under which a method's embedding is stored.

    Parameters
    ----------
    method
        Method name as in :data:`scvi_ext.methods.METHODS` (``"pca"``, ``"scvi"``, ...).

    Returns
    -------
    str
        ``"X_<method>"``.

    Examples
    --------
    >>> latent_key("piano")
    'X_piano'
    """
    return f"X_{method}"
