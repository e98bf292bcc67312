"""The functions the R package ``scviext`` calls through reticulate.

Everything crosses the language boundary as plain vectors (lists on the Python side): a ``dgCMatrix``'s
``i``/``p``/``x`` slots and its dimensions go in, a flat column-major list of floats and its dimensions come
back. No NumPy array is handed to R, so the bridge works with reticulate builds that cannot convert NumPy 2
arrays (Debian's reticulate 1.28: "incompatible NumPy binary version").
"""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import DEFAULTS
from ._constants import FILES, KEYS, LABEL_TRANSFER_K, LAYERS, QUERY_BATCH, QUERY_UNSUPPORTED, SUITE_METHODS
from ._hooks import apply_hook
from ._models import available_models, get_model_class

if TYPE_CHECKING:
    from anndata import AnnData

#: Methods that work on log-normalised data (``layer="data"``): they only use the PCA of ``X``.
DATA_METHODS: tuple[str, ...] = ("pca", "harmony")
#: Names under which model classes' ``setup_anndata`` take the batch column, tried in this order.
BATCH_ARGUMENTS: tuple[str, ...] = ("batch_key", "source_key")


def _as_list(value: Any) -> list:
    """reticulate turns a length-1 R vector into a scalar: make every vector a list again."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, int, float, bool, np.generic)):
        return [value]
    return list(value)


def sparse_from_r(i: Sequence[int], p: Sequence[int], x: Sequence[float], dims: Sequence[int]) -> sp.csr_matrix:
    """Build the cells x genes CSR matrix from the slots of an R ``dgCMatrix`` of genes x cells.

    A genes x cells CSC matrix has the same three arrays as the cells x genes CSR matrix.

    Parameters
    ----------
    i, p, x
        ``dgCMatrix`` slots (0-based row indices, column pointers, values).
    dims
        ``c(n_genes, n_cells)``.

    Returns
    -------
    scipy.sparse.csr_matrix
        cells x genes, float32.

    Examples
    --------
    >>> m = sparse_from_r([0, 1], [0, 1, 2], [3.0, 4.0], [2, 2])
    >>> m.toarray().tolist()
    [[3.0, 0.0], [0.0, 4.0]]
    """
    n_genes, n_cells = (int(d) for d in _as_list(dims))
    indices = np.asarray(_as_list(i), dtype=np.int32)
    indptr = np.asarray(_as_list(p), dtype=np.int64)
    data = np.asarray(_as_list(x), dtype=np.float32)
    if indptr.size != n_cells + 1 or indices.size != data.size:
        raise ValueError(
            f"inconsistent dgCMatrix slots: {indptr.size} column pointers for {n_cells} cells, "
            f"{indices.size} row indices for {data.size} values."
        )
    return sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))


def anndata_from_r(
    matrix: Mapping[str, Any],
    obs: Mapping[str, Any] | None = None,
    *,
    layer: str = LAYERS.COUNTS,
) -> AnnData:
    """Assemble an AnnData from what the R package sends.

    Parameters
    ----------
    matrix
        ``{"i", "p", "x", "dims", "genes", "cells"}`` of a genes x cells ``dgCMatrix``.
    obs
        meta.data columns as ``{name: vector}`` (character or numeric, one value per cell).
    layer
        ``"counts"`` (raw counts go to ``X``) or ``"data"`` (log-normalised values go to ``X``).

    Returns
    -------
    AnnData
        cells x genes with ``obs`` indexed by the cell names.

    Examples
    --------
    >>> m = {"i": [0, 1], "p": [0, 1, 2], "x": [3.0, 4.0], "dims": [2, 2], "genes": ["g1", "g2"],
    ...      "cells": ["c1", "c2"]}
    >>> anndata_from_r(m, {"batch": ["a", "b"]}).obs["batch"].tolist()
    ['a', 'b']
    """
    import anndata

    if layer not in LAYERS:
        raise ValueError(f"layer={layer!r}: expected one of {list(LAYERS)}.")
    X = sparse_from_r(matrix["i"], matrix["p"], matrix["x"], matrix["dims"])
    cells = [str(c) for c in _as_list(matrix["cells"])]
    genes = [str(g) for g in _as_list(matrix["genes"])]
    if len(cells) != X.shape[0] or len(genes) != X.shape[1]:
        raise ValueError(f"{len(cells)} cell names and {len(genes)} gene names for a matrix of shape {X.shape}.")
    frame = pd.DataFrame(index=pd.Index(cells, name=None))
    for name, values in (obs or {}).items():
        vals = _as_list(values)
        if len(vals) != len(cells):
            raise ValueError(f"meta.data column {name!r} has {len(vals)} values for {len(cells)} cells.")
        if all(isinstance(v, str) for v in vals):
            frame[str(name)] = pd.Categorical(vals)
        else:
            frame[str(name)] = np.asarray(vals, dtype=np.float64)
    return anndata.AnnData(X=X, obs=frame, var=pd.DataFrame(index=pd.Index(genes)))


def _to_r(emb: np.ndarray, cells: Sequence[str]) -> dict[str, Any]:
    emb = np.asarray(emb, dtype=np.float64)
    return {
        KEYS.EMBEDDING: emb.ravel(order="F").tolist(),
        KEYS.DIMS: [int(emb.shape[0]), int(emb.shape[1])],
        KEYS.CELLS: [str(c) for c in cells],
    }


def _set_threads(n_threads: int | None) -> None:
    if n_threads is not None and int(n_threads) > 0:
        import torch

        torch.set_num_threads(int(n_threads))


def _seed_everything(seed: int) -> None:
    import scvi

    scvi.settings.seed = int(seed)


def landed_method(method: str):
    """The registry entry of ``method``, or, for a suite model not registered yet, its ``run_<method>``.

    Returns ``None`` when neither exists (the model has not landed).

    Examples
    --------
    >>> landed_method("pca").name
    'pca'
    """
    import importlib

    from ..methods import METHODS, Method

    if method in METHODS:
        return METHODS[method]
    try:
        module = importlib.import_module(f"scvi_ext.{method}")
    except ImportError:
        return None
    run = getattr(module, f"run_{method}", None)
    return None if run is None else Method(method, run, f"{method} (not registered yet)", trains=True)


def environment_info() -> dict[str, Any]:
    """Describe this Python environment for ``scviext::scviext_config()`` in R.

    Returns
    -------
    dict
        ``scvi_ext``/``scvi-tools``/``numpy`` versions, the registry's methods and the methods with a
        trainable model available now.

    Examples
    --------
    >>> "methods" in environment_info()
    True
    """
    from importlib.metadata import version

    from ..methods import METHODS

    landed = [m for m in SUITE_METHODS if m not in METHODS and landed_method(m) is not None]
    return {
        "scvi_ext": version("scvi-ext"),
        "scvi_tools": version("scvi-tools"),
        "numpy": np.__version__,
        "methods": sorted(METHODS) + landed,
        "models": [m for m in available_models() if m in METHODS or landed_method(m) is not None],
    }


def _prepare_from_data(adata: AnnData, n_pcs: int, seed: int) -> AnnData:
    """Prepared-AnnData stand-in for log-normalised input: ``X`` as given plus its PCA."""
    import scanpy as sc

    from .._constants import OBSM_KEYS
    from .._validation import check_finite

    check_finite(adata.X, "the 'data' layer")
    ad = adata.copy()
    n_comps = max(1, min(n_pcs, ad.n_obs - 1, ad.n_vars - 1))
    sc.pp.pca(ad, n_comps=n_comps, svd_solver="arpack", random_state=seed)
    ad.obsm[OBSM_KEYS.PCA] = np.asarray(ad.obsm[OBSM_KEYS.PCA], dtype=np.float32)
    return ad


def _split_covariates(adata: AnnData, covariates: Sequence[str]) -> tuple[list[str], list[str]]:
    from .._validation import check_obs_key

    categorical, continuous = [], []
    for key in covariates:
        check_obs_key(adata, key, "covariates")
        (continuous if pd.api.types.is_numeric_dtype(adata.obs[key]) else categorical).append(key)
    return categorical, continuous


def _setup_kwargs(cls: type, batch_key: str, categorical: list[str], continuous: list[str]) -> dict:
    """``setup_anndata`` arguments for the counts layer and the batch, named the way ``cls`` names them."""
    params = inspect.signature(cls.setup_anndata).parameters
    kwargs: dict[str, Any] = {}
    if "layer" in params:
        kwargs["layer"] = LAYERS.COUNTS
    batch_arg = next((name for name in BATCH_ARGUMENTS if name in params), None)
    if batch_arg is None:
        raise ValueError(f"{cls.__name__}.setup_anndata takes none of {list(BATCH_ARGUMENTS)}.")
    kwargs[batch_arg] = batch_key
    if categorical:
        kwargs["categorical_covariate_keys"] = categorical
    if continuous:
        kwargs["continuous_covariate_keys"] = continuous
    missing = [k for k in kwargs if k not in params]
    if missing:
        raise ValueError(f"{cls.__name__}.setup_anndata does not take {missing}; drop the covariates.")
    return kwargs


def _train_kwargs(
    model: Any, max_epochs, accelerator: str, progress_bar: bool, n_obs: int, query: bool = False
) -> dict:
    params = inspect.signature(model.train).parameters
    kwargs: dict[str, Any] = {"max_epochs": None if max_epochs is None else int(max_epochs),
                              "accelerator": accelerator}
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if "progress_bar" in params:
        kwargs["progress_bar"] = bool(progress_bar)
    elif "enable_progress_bar" in params or has_var_kw:
        kwargs["enable_progress_bar"] = bool(progress_bar)
    batch_size = params.get("batch_size")
    if batch_size is not None and isinstance(batch_size.default, int) and batch_size.default > n_obs:
        kwargs["batch_size"] = int(n_obs)  # small data sets (tests, toy objects): one minibatch
    if query:  # scArches query training: no weight decay on the (new) query parameters
        if "weight_decay" in params:
            kwargs["weight_decay"] = 0.0
        elif "plan_kwargs" in params:
            kwargs["plan_kwargs"] = {"weight_decay": 0.0}
    return kwargs


def integrate_anndata(
    adata: AnnData,
    method: str,
    batch_key: str,
    *,
    covariates: Sequence[str] | str | None = None,
    layer: str = LAYERS.COUNTS,
    max_epochs: int | None = None,
    seed: int = DEFAULTS.SEED,
    n_threads: int | None = None,
    accelerator: str = "auto",
    progress_bar: bool = True,
    model_dir: str | None = None,
    labels_key: str | None = None,
    n_pcs: int = DEFAULTS.N_PCS,
    method_kwargs: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, pd.Index, dict[str, Any]]:
    """Integrate ``adata`` (counts in ``X``) with ``method``; optionally save the model for query mapping.

    The AnnData-level core of :func:`integrate_from_r` and of ``scvi-ext integrate --save-model``: see
    :func:`integrate_from_r` for the parameters (``adata`` replaces ``matrix``/``obs``).

    Returns
    -------
    embedding, cell names, info
        The latent (cells x dims, float32), the names of its rows and what was run.

    Examples
    --------
    >>> emb, cells, info = integrate_anndata(adata, "piano", "batch", model_dir="models/x")  # doctest: +SKIP
    """
    from ..methods import get_method, integrate, prepare

    spec = landed_method(method)
    if spec is None and (method in SUITE_METHODS or get_model_class(method) is None):
        get_method(method)  # raises the registry's ValueError listing the choices (not landed yet)
    covariates = [str(c) for c in _as_list(covariates)]
    method_kwargs = dict(method_kwargs or {})
    if layer == LAYERS.DATA and method not in DATA_METHODS:
        raise ValueError(
            f"method={method!r} models raw counts: use layer='counts' (layer='data' suits {list(DATA_METHODS)})."
        )
    _set_threads(n_threads)
    _seed_everything(seed)
    n_pcs = max(1, min(int(n_pcs), adata.n_obs - 1, adata.n_vars - 1))
    info: dict[str, Any] = {"method": method, "batch_key": batch_key, "seed": int(seed), "layer": layer,
                            "n_features": int(adata.n_vars), "covariates": covariates}
    if layer == LAYERS.DATA:
        from .._validation import check_n_categories

        check_n_categories(adata, batch_key)
        prepared = _prepare_from_data(adata, n_pcs, int(seed))
        out = integrate(adata, method, batch_key, prepared=prepared, seed=int(seed), **method_kwargs)
        info["path"] = "registry"
        return out.obsm[f"X_{method}"], out.obs_names, info
    if spec is not None and model_dir is None and not covariates:
        kwargs = {"max_epochs": max_epochs, "accelerator": accelerator, "progress_bar": bool(progress_bar)}
        prepared = prepare(adata, batch_key, n_hvg=adata.n_vars, n_pcs=n_pcs, seed=int(seed))
        emb = np.asarray(spec.run(prepared, batch_key, seed=int(seed), **(kwargs if spec.trains else {}),
                                  **method_kwargs), dtype=np.float32)
        if emb.shape[0] != prepared.n_obs or not np.isfinite(emb).all():
            raise RuntimeError(f"method {method!r} returned an invalid embedding of shape {emb.shape}")
        info["path"] = "registry"
        return emb, prepared.obs_names, info

    cls = get_model_class(method, required=True)
    prepared = prepare(adata, batch_key, n_hvg=adata.n_vars, n_pcs=n_pcs, seed=int(seed))
    categorical, continuous = _split_covariates(prepared, covariates)
    if labels_key is not None:
        from .._validation import check_obs_key

        check_obs_key(prepared, labels_key, "labels")
    prepared, overrides = apply_hook(method, prepared, batch_key, int(seed))
    setup = {**_setup_kwargs(cls, batch_key, categorical, continuous), **overrides}
    cls.setup_anndata(prepared, **setup)
    model = cls(prepared, **method_kwargs)
    model.train(**_train_kwargs(model, max_epochs, accelerator, progress_bar, prepared.n_obs))
    emb = np.asarray(model.get_latent_representation(), dtype=np.float32)
    info["path"] = "model"
    info["model_class"] = type(model).__name__
    if model_dir is not None:
        folder = Path(model_dir)
        # the reference AnnData is saved too: some models map queries from a loaded reference instance
        model.save(str(folder), overwrite=True, save_anndata=True)
        sidecar = {
            "method": method,
            "model_class": f"{type(model).__module__}:{type(model).__name__}",
            "batch_key": batch_key,
            "categorical_covariates": categorical,
            "continuous_covariates": continuous,
            "features": [str(g) for g in prepared.var_names],
            "labels_key": labels_key,
            "labels": None if labels_key is None else [str(v) for v in prepared.obs[labels_key]],
            "seed": int(seed),
            "n_latent": int(emb.shape[1]),
        }
        (folder / FILES.SIDECAR).write_text(json.dumps(sidecar))
        if labels_key is not None:
            np.save(folder / FILES.REFERENCE_LATENT, emb)
        info["model_dir"] = str(folder)
    return emb, prepared.obs_names, info


def integrate_from_r(
    matrix: Mapping[str, Any],
    obs: Mapping[str, Any],
    method: str,
    batch_key: str,
    *,
    covariates: Sequence[str] | str | None = None,
    layer: str = LAYERS.COUNTS,
    max_epochs: int | None = None,
    seed: int = DEFAULTS.SEED,
    n_threads: int | None = None,
    accelerator: str = "auto",
    progress_bar: bool = True,
    model_dir: str | None = None,
    labels_key: str | None = None,
    n_pcs: int = DEFAULTS.N_PCS,
    method_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Integrate the cells R sent and return the embedding as plain vectors.

    Without ``model_dir`` and ``covariates``, a registered method runs through the suite's registry
    (:func:`scvi_ext.methods.integrate`: the same preprocessing and defaults as the CLI; every selected
    feature is kept). With either, the method's scvi-tools model class (:func:`get_model_class`) is set up on
    the counts, trained, and saved to ``model_dir`` together with ``scviext_r.json`` (and, with
    ``labels_key``, the reference embedding and labels for :func:`map_query_from_r`).

    Parameters
    ----------
    matrix
        genes x cells ``dgCMatrix`` slots, see :func:`anndata_from_r`.
    obs
        meta.data columns the method needs (batch, covariates, labels).
    method
        A name in :data:`scvi_ext.methods.METHODS`.
    batch_key
        Batch column of ``obs``.
    covariates
        Extra covariate columns (numeric: continuous; otherwise categorical); need a model class.
    layer
        ``"counts"`` or ``"data"`` (log-normalised; only for :data:`DATA_METHODS`).
    max_epochs
        Training epochs (``None``: the method's default).
    seed
        Random seed.
    n_threads
        ``torch.set_num_threads`` (``None`` leaves it).
    accelerator
        Lightning accelerator.
    progress_bar
        Show training progress.
    model_dir
        Folder to save the trained model to.
    labels_key
        Cell-type column saved with the model for label transfer onto a query.
    n_pcs
        PCA components of the preprocessing.
    method_kwargs
        Passed to the registry's method or the model class.

    Returns
    -------
    dict
        ``embedding`` (flat, column-major), ``dims`` (cells, dimensions), ``cells`` (row order) and
        ``info`` (what was run).

    Examples
    --------
    >>> out = integrate_from_r(m, {"batch": b}, "harmony", "batch")  # doctest: +SKIP
    >>> out["dims"]  # doctest: +SKIP
    [80, 30]
    """
    adata = anndata_from_r(matrix, obs, layer=layer)
    emb, cells, info = integrate_anndata(
        adata,
        method,
        batch_key,
        covariates=covariates,
        layer=layer,
        max_epochs=max_epochs,
        seed=seed,
        n_threads=n_threads,
        accelerator=accelerator,
        progress_bar=progress_bar,
        model_dir=model_dir,
        labels_key=labels_key,
        n_pcs=n_pcs,
        method_kwargs=method_kwargs,
    )
    return {**_to_r(emb, cells), KEYS.INFO: info}


def read_model_info(model_dir: str) -> dict[str, Any]:
    """Return what :func:`integrate_from_r` recorded in ``model_dir`` (raises a clear error when absent).

    Examples
    --------
    >>> read_model_info("models/pbmc")["method"]  # doctest: +SKIP
    'scvi'
    """
    path = Path(model_dir) / FILES.SIDECAR
    if not path.is_file():
        raise FileNotFoundError(
            f"model_dir={str(model_dir)!r} has no {FILES.SIDECAR}: save a model with "
            "RunScviExt(..., model_dir = ...) first."
        )
    return json.loads(path.read_text())


def _align_query(query: AnnData, features: list[str]) -> AnnData:
    import anndata

    query_genes = set(query.var_names)
    present = [g for g in features if g in query_genes]
    if not present:
        raise ValueError("The query shares none of the reference model's features; check the gene names.")
    if len(present) < len(features):
        warnings.warn(
            f"The query lacks {len(features) - len(present)} of the model's {len(features)} features; "
            "they are set to zero.",
            UserWarning,
            stacklevel=3,
        )
    col = {g: j for j, g in enumerate(query.var_names)}
    X = sp.csr_matrix(query.X)
    src = np.array([col.get(g, -1) for g in features])
    have = np.flatnonzero(src >= 0)
    # scatter the present columns to their model positions with one sparse product (missing ones stay zero)
    place = sp.csr_matrix((np.ones(have.size, dtype=np.float32), (np.arange(have.size), have)),
                          shape=(have.size, len(features)))
    out = (X[:, src[have]].astype(np.float32) @ place).tocsr()
    return anndata.AnnData(X=out, obs=query.obs.copy(), var=pd.DataFrame(index=pd.Index(features)))


def transfer_labels(
    reference_latent: np.ndarray, labels: Sequence[str], query_latent: np.ndarray, k: int = LABEL_TRANSFER_K
) -> tuple[list[str], list[float]]:
    """kNN majority vote of reference labels in the shared latent space.

    Parameters
    ----------
    reference_latent, query_latent
        Embeddings (cells x dims) from the same model.
    labels
        One label per reference cell.
    k
        Neighbours (capped at the number of reference cells).

    Returns
    -------
    labels, confidence
        Predicted label per query cell and the fraction of its ``k`` neighbours that carry it.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.array([[0.0], [0.1], [5.0], [5.1]])
    >>> transfer_labels(ref, ["a", "a", "b", "b"], np.array([[0.05], [5.05]]), k=2)
    (['a', 'b'], [1.0, 1.0])
    """
    from ..neighbors import knn

    labels_arr = np.asarray(list(labels), dtype=object)
    k = max(1, min(int(k), len(labels_arr)))
    idx, _ = knn(np.asarray(reference_latent, dtype=np.float32), np.asarray(query_latent, dtype=np.float32),
                 k=k, exclude_self=False)
    votes = labels_arr[idx]
    predicted, confidence = [], []
    for row in votes:
        values, counts = np.unique(row.astype(str), return_counts=True)
        best = int(np.argmax(counts))
        predicted.append(str(values[best]))
        confidence.append(float(counts[best]) / k)
    return predicted, confidence


def map_query_anndata(
    query: AnnData,
    model_dir: str,
    *,
    batch_key: str | None = None,
    max_epochs: int | None = None,
    seed: int = DEFAULTS.SEED,
    n_threads: int | None = None,
    accelerator: str = "auto",
    progress_bar: bool = True,
) -> tuple[np.ndarray, pd.Index, list[str], list[float], dict[str, Any]]:
    """Map the query cells of ``query`` (counts in ``X``) onto a reference model saved with ``model_dir``.

    The AnnData-level core of :func:`map_query_from_r` and of ``scvi-ext map-query``: see
    :func:`map_query_from_r` for the parameters (``query`` replaces ``matrix``/``obs``).

    Returns
    -------
    embedding, cell names, labels, confidence, info
        Query latent (cells x dims), its row names, the transferred labels and their confidence (empty lists
        when the reference was saved without labels) and what was run.

    Examples
    --------
    >>> emb, cells, labels, conf, info = map_query_anndata(query, "models/x", max_epochs=5)  # doctest: +SKIP
    """
    import anndata

    from .._constants import DEFAULTS as D

    sidecar = read_model_info(model_dir)
    if sidecar["method"] in QUERY_UNSUPPORTED:
        raise NotImplementedError(
            f"Query mapping for {sidecar['method']!r} is not supported yet: {QUERY_UNSUPPORTED[sidecar['method']]}."
        )
    cls = get_model_class(sidecar["method"], required=True)
    _set_threads(n_threads)
    _seed_everything(seed)
    from .._validation import check_counts

    check_counts(query.X, "the query's counts")
    ref_batch = sidecar["batch_key"]
    if batch_key is None:
        query.obs[ref_batch] = pd.Categorical([QUERY_BATCH] * query.n_obs)
    else:
        from .._validation import check_obs_key

        check_obs_key(query, batch_key, "batch")
        query.obs[ref_batch] = pd.Categorical(query.obs[batch_key].astype(str))
    for key in sidecar["categorical_covariates"] + sidecar["continuous_covariates"]:
        from .._validation import check_obs_key

        check_obs_key(query, key, "covariates")
    q = _align_query(query, sidecar["features"])
    q.layers[LAYERS.COUNTS] = q.X.copy()
    import scanpy as sc

    sc.pp.normalize_total(q, target_sum=D.TARGET_SUM)
    sc.pp.log1p(q)
    q = anndata.AnnData(X=q.X, obs=q.obs, var=q.var, layers={LAYERS.COUNTS: q.layers[LAYERS.COUNTS]})
    q, _ = apply_hook(sidecar["method"], q, ref_batch, int(seed))
    load_kwargs = {"accelerator": accelerator} if "accelerator" in inspect.signature(cls.load_query_data).parameters else {}
    try:
        model = cls.load_query_data(q, str(model_dir), **load_kwargs)
    except (TypeError, AttributeError):  # this model's load_query_data wants a reference instance
        model = cls.load_query_data(q, cls.load(str(model_dir)), **load_kwargs)
    try:
        model.train(**_train_kwargs(model, max_epochs, accelerator, progress_bar, q.n_obs, query=True))
    except ValueError as err:
        if "Nothing to train" not in str(err):
            raise
        model.is_trained_ = True  # no new batch: the frozen reference already embeds the query
    emb = np.asarray(model.get_latent_representation(), dtype=np.float32)
    labels: list[str] = []
    confidence: list[float] = []
    if sidecar.get("labels"):
        ref_latent = np.load(Path(model_dir) / FILES.REFERENCE_LATENT)
        labels, confidence = transfer_labels(ref_latent, sidecar["labels"], emb)
    info = {"method": sidecar["method"], "model_dir": str(model_dir), "seed": int(seed),
            "labels_key": sidecar.get("labels_key")}
    return emb, q.obs_names, labels, confidence, info


def map_query_from_r(
    matrix: Mapping[str, Any],
    obs: Mapping[str, Any],
    model_dir: str,
    *,
    batch_key: str | None = None,
    max_epochs: int | None = None,
    seed: int = DEFAULTS.SEED,
    n_threads: int | None = None,
    accelerator: str = "auto",
    progress_bar: bool = True,
) -> dict[str, Any]:
    """Map query cells onto a reference model saved by :func:`integrate_from_r` (scArches).

    The query counts are put in the model's feature order (missing features as zeros), the model is extended
    with :meth:`load_query_data`, trained for ``max_epochs`` with frozen reference weights, and the query's
    embedding comes back; when the reference was saved with labels, each query cell gets the majority label of
    its 15 nearest reference cells and the fraction of them that agree (``confidence``).

    Parameters
    ----------
    matrix, obs
        Query cells, as in :func:`integrate_from_r`.
    model_dir
        Folder written by ``RunScviExt(..., model_dir=)``.
    batch_key
        Query column holding its batches; ``None`` puts all query cells in one new batch ``"query"``.
    max_epochs
        Query training epochs (``None``: the model's default).
    seed, n_threads, accelerator, progress_bar
        As in :func:`integrate_from_r`.

    Returns
    -------
    dict
        As :func:`integrate_from_r`, plus ``labels`` and ``confidence`` (empty without reference labels).

    Examples
    --------
    >>> out = map_query_from_r(m, {}, "models/pbmc", max_epochs=2)  # doctest: +SKIP
    """
    query = anndata_from_r(matrix, obs, layer=LAYERS.COUNTS)
    emb, cells, labels, confidence, info = map_query_anndata(
        query,
        model_dir,
        batch_key=batch_key,
        max_epochs=max_epochs,
        seed=seed,
        n_threads=n_threads,
        accelerator=accelerator,
        progress_bar=progress_bar,
    )
    return {**_to_r(emb, cells), KEYS.LABELS: labels, KEYS.CONFIDENCE: confidence, KEYS.INFO: info}
