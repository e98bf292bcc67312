"""Per-method preparation before ``setup_anndata`` on the model path of the R bridge.

Most models take the counts layer and a batch column as they are. A few need derived inputs; their hook turns
the prepared AnnData (counts in ``layers['counts']``, log-normalised ``X``) into what their
``setup_anndata`` expects and names the ``setup_anndata`` arguments to override. The same hook runs on a
query before :meth:`load_query_data`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData


def _log_normalised(adata: AnnData, batch_key: str, seed: int) -> tuple[AnnData, dict[str, Any]]:
    # SysVI models the log-normalised X (Gaussian likelihood), as run_sysvi does; not the counts layer.
    return adata, {"layer": None}


def _sccraft(adata: AnnData, batch_key: str, seed: int) -> tuple[AnnData, dict[str, Any]]:
    # scCRAFT reads the log-normalised X (as run_sccraft) and Leiden pseudo-labels at two resolutions.
    from ..sccraft import cluster_pseudo_labels

    ad = adata.copy()
    cluster_pseudo_labels(ad, random_state=seed)
    return ad, {"layer": None}


def _uniport(adata: AnnData, batch_key: str, seed: int) -> tuple[AnnData, dict[str, Any]]:
    # uniPort's decoders are sigmoid + BCE: log-normalised values MaxAbs-scaled per batch (as run_uniport does).
    ad = adata.copy()
    X = ad.X.toarray() if sp.issparse(ad.X) else np.asarray(ad.X)
    X = np.asarray(X, dtype=np.float32).copy()
    batches = ad.obs[batch_key].astype(str).to_numpy()
    for b in np.unique(batches):
        rows = batches == b
        m = np.abs(X[rows]).max(0)
        X[rows] = X[rows] / np.where(m > 0, m, 1.0)
    ad.X = X
    return ad, {"layer": None}


def _scbiot(adata: AnnData, batch_key: str, seed: int) -> tuple[AnnData, dict[str, Any]]:
    # scBIOT's model reads the OT-refined PCA and OT pseudo-labels (as run_scbiot prepares them). The reference
    # (prepared: it has the PCA) also records its PCA projection, which the saved model keeps; a query (no PCA)
    # is left as it is: SCBIOT.load_query_data rebuilds its OT-refined PCA from the counts with that projection.
    from .._constants import OBSM_KEYS
    from ..scbiot import build_query_map
    from ..scbiot._integrate import KEYS, integrate, pseudo_labels

    if OBSM_KEYS.PCA not in adata.obsm:
        return adata, {}
    ad = adata.copy()
    integrate(ad, "rna", obsm_key=OBSM_KEYS.PCA, batch_key=batch_key, out_key=KEYS.OT_OUT, random_state=seed)
    pseudo_labels(ad, KEYS.OT_OUT, random_state=seed)
    build_query_map(ad, OBSM_KEYS.PCA, KEYS.OT_OUT)
    return ad, {"obsm_key": KEYS.OT_OUT, "pseudo_label_key": KEYS.PSEUDO}


#: method -> hook(adata, batch_key, seed) -> (adata for setup_anndata, setup_anndata overrides)
SETUP_HOOKS: dict[str, Callable[[AnnData, str, int], tuple[AnnData, dict[str, Any]]]] = {
    "sysvi": _log_normalised,
    "sccraft": _sccraft,
    "uniport": _uniport,
    "scbiot": _scbiot,
}


def apply_hook(method: str, adata: AnnData, batch_key: str, seed: int) -> tuple[AnnData, dict[str, Any]]:
    """Run ``method``'s hook (identity without one).

    Examples
    --------
    >>> ad, overrides = apply_hook("scvi", adata, "batch", 0)  # doctest: +SKIP
    """
    hook = SETUP_HOOKS.get(method)
    return (adata, {}) if hook is None else hook(adata, batch_key, seed)
