"""supBIOT-style label transfer on an integrated embedding (spec §6.4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..neighbors import knn
from ._constants import KEYS, UNLABELED_ALIASES

if TYPE_CHECKING:
    from anndata import AnnData

_C = 5.0
_MAX_ITER = 3000
_SECOND_REP_WEIGHT = 0.5
_PROTO_WEIGHT = 0.1
_PROTO_TEMP = 0.1


def _unlabeled_mask(values: pd.Series, unlabeled_category: str) -> np.ndarray:
    s = values.astype(object)
    low = s.astype(str).str.strip().str.lower()
    return (s.isna() | (s.astype(str) == str(unlabeled_category)) | low.isin(UNLABELED_ALIASES)).to_numpy()


def _rep(adata: AnnData, key: str | None) -> np.ndarray:
    if key is None:
        X = adata.X
    else:
        if key not in adata.obsm:
            raise KeyError(f"use_rep={key!r} is not in adata.obsm (available: {sorted(adata.obsm.keys())}).")
        X = adata.obsm[key]
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise ValueError(f"The representation {key or 'adata.X'!r} contains NaN or infinite values.")
    return X


def transfer_labels(
    adata: AnnData,
    *,
    label_key: str,
    use_rep: str | None = KEYS.OT_OUT,
    second_rep: str | None = None,
    unlabeled_category: str = "unknown",
    pred_label_key: str = KEYS.PRED_LABEL,
    pred_conf_key: str = KEYS.PRED_CONF,
    min_conf: float = 0.25,
    mode: str = "logreg",
    k: int = 15,
    random_state: int = 0,
) -> pd.DataFrame:
    """Transfer labels from labelled to unlabelled cells of one integrated embedding (supBIOT-like).

    Query = cells whose ``label_key`` is ``unlabeled_category`` (or NaN / "unknown"-like). The embedding is
    standardised with the reference cells' mean/std; ``mode="logreg"`` fits a multinomial logistic regression
    (lbfgs, C = 5, L2, balanced class weights, 3000 iterations) on the reference cells; with ``second_rep`` the
    class probabilities are blended 50/50 with those from the second representation; 0.1 of a prototype score
    (softmax of cosine similarity to the L2-normalised reference class centroids, temperature 0.1) is blended in.
    ``mode="knn"``: cosine kNN vote with exponential distance weights. Prediction = argmax, confidence = max
    probability; below ``min_conf`` the prediction is ``unlabeled_category``.

    Parameters
    ----------
    adata
        AnnData holding reference and query cells.
    label_key
        ``obs`` column with the reference labels and the unlabeled marker for query cells.
    use_rep
        ``obsm`` key of the embedding (``None``: ``adata.X``).
    second_rep
        Optional second ``obsm`` representation blended in (e.g. a model latent).
    unlabeled_category
        Marker of query cells.
    pred_label_key, pred_conf_key
        ``obs`` columns written for query rows (others get NaN).
    min_conf
        Confidence below which a query cell stays unlabeled.
    mode
        ``"logreg"`` (default) or ``"knn"``.
    k
        Neighbours of ``mode="knn"``.
    random_state
        Seed of the classifier.

    Returns
    -------
    pandas.DataFrame
        Query rows: ``pred_label_key``, ``pred_conf_key`` and one probability column per class.

    Raises
    ------
    KeyError
        ``label_key`` or a representation missing.
    ValueError
        No query cells, fewer than two reference classes, NaN in the embedding, unknown ``mode``.

    Examples
    --------
    >>> res = transfer_labels(adata, label_key="cell_type", use_rep="X_scbiot_ot")  # doctest: +SKIP
    """
    from sklearn.linear_model import LogisticRegression

    if label_key not in adata.obs:
        raise KeyError(f"label_key={label_key!r} is not a column of adata.obs.")
    if mode not in ("logreg", "knn"):
        raise ValueError(f"mode must be 'logreg' or 'knn', got {mode!r}.")
    query = _unlabeled_mask(adata.obs[label_key], unlabeled_category)
    ref = ~query
    if not query.any():
        raise ValueError(f"No query cells: no value of {label_key!r} equals {unlabeled_category!r} (or NaN).")
    y_ref = adata.obs[label_key].astype(str).to_numpy()[ref]
    classes = np.unique(y_ref)
    if len(classes) < 2:
        raise ValueError(
            f"Label transfer needs at least two reference classes in {label_key!r}, got {list(classes)}."
        )

    def _probs(X: np.ndarray) -> np.ndarray:
        mu, sd = X[ref].mean(0), X[ref].std(0) + 1e-8
        Z = (X - mu) / sd
        if mode == "logreg":
            clf = LogisticRegression(
                C=_C, max_iter=_MAX_ITER, class_weight="balanced", random_state=random_state
            )
            clf.fit(Z[ref], y_ref)
            P = clf.predict_proba(Z[query])
            return P[:, np.searchsorted(clf.classes_, classes)]
        kk = int(min(k, ref.sum()))
        idx, dist = knn(Z[ref], Z[query], k=kk, metric="cosine")
        w = np.exp(-dist / (dist.mean(1, keepdims=True) + 1e-8))
        codes = np.searchsorted(classes, y_ref)[idx]
        P = np.zeros((query.sum(), len(classes)))
        np.add.at(P, (np.repeat(np.arange(len(idx)), kk), codes.ravel()), w.ravel())
        return P / P.sum(1, keepdims=True)

    X = _rep(adata, use_rep)
    P = _probs(X)
    if second_rep is not None:
        P = (1 - _SECOND_REP_WEIGHT) * P + _SECOND_REP_WEIGHT * _probs(_rep(adata, second_rep))
    # prototype score: cosine to L2-normalised reference class centroids (standardised embedding)
    Z = (X - X[ref].mean(0)) / (X[ref].std(0) + 1e-8)
    cent = np.stack([Z[ref][y_ref == c].mean(0) for c in classes])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True) + 1e-12
    zq = Z[query] / (np.linalg.norm(Z[query], axis=1, keepdims=True) + 1e-12)
    S = zq @ cent.T / _PROTO_TEMP
    S = np.exp(S - S.max(1, keepdims=True))
    S /= S.sum(1, keepdims=True)
    P = (1 - _PROTO_WEIGHT) * P + _PROTO_WEIGHT * S
    conf = P.max(1)
    pred = classes[P.argmax(1)].astype(object)
    pred[conf < min_conf] = unlabeled_category
    out = pd.DataFrame(P, index=adata.obs_names[query], columns=[f"prob_{c}" for c in classes])
    out.insert(0, pred_conf_key, conf)
    out.insert(0, pred_label_key, pred)
    labels = pd.Series(np.nan, index=adata.obs_names, dtype=object)
    labels[query] = pred
    confs = pd.Series(np.nan, index=adata.obs_names, dtype=float)
    confs[query] = conf
    adata.obs[pred_label_key] = labels.values
    adata.obs[pred_conf_key] = confs.values
    return out
