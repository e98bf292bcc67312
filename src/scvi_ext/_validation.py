"""Early, readable input checks shared by every model, the CLI and the benchmark runner.

Every check raises before any training starts and never modifies the AnnData it inspects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData


#: Values examined per chunk by the checks below: their temporaries stay ~ a few MB whatever the matrix size
#: (a 200k x 2000 matrix would otherwise need several full-size float/bool copies).
_CHUNK = 1 << 22


def _values(X) -> np.ndarray:
    """Stored values of a dense or sparse matrix as a flat array (no densification, no copy when contiguous)."""
    if sp.issparse(X):
        return np.asarray(X.data).reshape(-1)
    return np.asarray(X).reshape(-1)


def _chunks(vals: np.ndarray):
    """Consecutive slices (views) of a flat array, ``_CHUNK`` values each."""
    for start in range(0, vals.size, _CHUNK):
        yield vals[start : start + _CHUNK]


def _count_nonfinite(vals: np.ndarray) -> int:
    return int(sum(int(np.count_nonzero(~np.isfinite(c))) for c in _chunks(vals)))


def _first_noninteger(vals: np.ndarray) -> float | None:
    """First value with a fractional part, or ``None`` when all are whole (checked chunk by chunk)."""
    for c in _chunks(vals):
        frac = np.mod(c, 1) != 0
        if frac.any():
            return float(c[np.argmax(frac)])
    return None


def check_nonempty(adata: AnnData) -> None:
    """Raise if ``adata`` has no cells or no features.

    Parameters
    ----------
    adata
        AnnData to check.

    Raises
    ------
    ValueError
        With the shape, when either dimension is zero.

    Examples
    --------
    >>> import anndata, numpy as np
    >>> check_nonempty(anndata.AnnData(np.ones((2, 3))))
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} features); "
            "integration needs at least one cell and one feature."
        )


def get_matrix(adata: AnnData, layer: str | None = None):
    """Return ``adata.layers[layer]`` (or ``adata.X``), raising a readable ``KeyError`` when missing.

    Parameters
    ----------
    adata
        AnnData to read.
    layer
        Layer name, or ``None`` for ``adata.X``.

    Returns
    -------
    numpy.ndarray or scipy.sparse.spmatrix
        The matrix itself (not a copy).

    Examples
    --------
    >>> import anndata, numpy as np
    >>> get_matrix(anndata.AnnData(np.ones((2, 3)))).shape
    (2, 3)
    """
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is None; pass `layer=` naming the layer that holds the data.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"layer={layer!r} is not in adata.layers (available: {sorted(adata.layers.keys())}); "
            "pass layer=None to use adata.X."
        )
    return adata.layers[layer]


def check_finite(X, where: str = "adata.X") -> None:
    """Raise a ``ValueError`` if ``X`` holds NaN or infinite values.

    Parameters
    ----------
    X
        Dense or sparse matrix.
    where
        How to name the matrix in the message (``"adata.X"``, ``"layer 'counts'"``, ...).

    Examples
    --------
    >>> check_finite(np.ones((2, 2)))
    """
    vals = _values(X)
    if vals.dtype.kind in "fc":
        n_bad = _count_nonfinite(vals)
        if n_bad:
            raise ValueError(f"{where} contains {n_bad} NaN or infinite values; remove or impute them first.")


def check_counts(X, where: str = "adata.X") -> None:
    """Raise unless ``X`` holds finite, non-negative integer counts.

    Parameters
    ----------
    X
        Dense or sparse matrix.
    where
        How to name the matrix in the message.

    Raises
    ------
    ValueError
        Naming the matrix and the first problem found (NaN/inf, negative values, non-integers).

    Examples
    --------
    >>> check_counts(np.array([[0, 1], [2, 3]]))
    """
    check_finite(X, where)
    vals = _values(X)
    if vals.size and vals.min() < 0:
        raise ValueError(f"{where} has negative values (min {vals.min():g}); raw counts are required.")
    if vals.dtype.kind in "fc" and vals.size:
        bad = _first_noninteger(vals)
        if bad is not None:
            raise ValueError(
                f"{where} does not hold integer counts (e.g. {bad:g}); this method "
                "models raw UMI/read counts: pass `layer=` naming a counts layer."
            )


def looks_like_counts(X) -> bool:
    """Return whether ``X`` is non-negative and integer-valued (a cheap heuristic for warnings).

    Examples
    --------
    >>> looks_like_counts(np.array([[0.0, 3.0]]))
    True
    """
    vals = _values(X)
    if vals.size == 0:
        return True
    if vals.dtype.kind not in "fc":
        return bool(vals.min() >= 0)
    return bool(vals.min() >= 0 and _first_noninteger(vals) is None)


def check_obs_key(adata: AnnData, key: str, argument: str = "batch_key") -> None:
    """Raise a ``KeyError`` naming the argument when ``key`` is not an ``adata.obs`` column.

    Parameters
    ----------
    adata
        AnnData to check.
    key
        Column name.
    argument
        Name of the user-facing argument that carried ``key``.

    Examples
    --------
    >>> import anndata, pandas as pd
    >>> a = anndata.AnnData(np.ones((2, 1)), obs=pd.DataFrame({"b": ["x", "y"]}, index=["c1", "c2"]))
    >>> check_obs_key(a, "b")
    """
    if key not in adata.obs.columns:
        cols = list(adata.obs.columns)
        shown = ", ".join(map(repr, cols[:20])) + (" ..." if len(cols) > 20 else "")
        raise KeyError(f"{argument}={key!r} is not a column of adata.obs (columns: {shown or 'none'}).")
    if adata.obs[key].isna().any():
        raise ValueError(
            f"{argument}={key!r}: adata.obs[{key!r}] has {int(adata.obs[key].isna().sum())} missing values; "
            "fill them (e.g. with 'Unknown') first."
        )


def check_n_categories(adata: AnnData, key: str, minimum: int = 2, argument: str = "batch_key") -> int:
    """Check that ``adata.obs[key]`` has at least ``minimum`` distinct values and return their number.

    Parameters
    ----------
    adata
        AnnData to check.
    key
        ``obs`` column.
    minimum
        Fewest categories the caller needs (2 for integration).
    argument
        Name of the user-facing argument that carried ``key``.

    Returns
    -------
    int
        Number of distinct values.

    Examples
    --------
    >>> import anndata, pandas as pd
    >>> a = anndata.AnnData(np.ones((2, 1)), obs=pd.DataFrame({"b": ["x", "y"]}, index=["c1", "c2"]))
    >>> check_n_categories(a, "b")
    2
    """
    check_obs_key(adata, key, argument)
    n = int(adata.obs[key].nunique())
    if n < minimum:
        raise ValueError(
            f"{argument}={key!r} has {n} distinct value(s) but at least {minimum} are needed "
            "(integration removes differences between batches: there must be more than one)."
        )
    return n


def check_query_features(reference: Sequence[str], query: Sequence[str]) -> None:
    """Raise if the query lacks features of the reference.

    Parameters
    ----------
    reference
        Reference feature names, in model order.
    query
        Query ``var_names``.

    Raises
    ------
    ValueError
        Listing how many and which features are missing (reorder/pad with
        ``scvi.model.base.ArchesMixin.prepare_query_anndata`` to fix).

    Examples
    --------
    >>> check_query_features(["a", "b"], ["b", "a", "c"])
    """
    missing = [g for g in reference if g not in set(query)]
    if missing:
        raise ValueError(
            f"The query lacks {len(missing)} of the reference's {len(reference)} features "
            f"(e.g. {missing[:5]}); call `Model.prepare_query_anndata(query, reference_model)` to pad them with zeros."
        )
