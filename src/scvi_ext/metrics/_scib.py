"""A thin wrapper around scib-metrics' ``Benchmarker`` returning one tidy, numeric table.

The scores are the raw scib-metrics values (``min_max_scale=False`` by default), so a row depends only on its
own embedding and on the pre-integrated embedding: runs made with the same preprocessing are comparable with
``../shared/reference-results.md``. Needs the ``bench`` extra (``pip install 'scvi-ext[bench]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import OBSM_KEYS

if TYPE_CHECKING:
    from anndata import AnnData

#: Largest neighbourhood the Benchmarker builds (it uses 15, 50 and 90 neighbours).
MAX_NEIGHBORS = 90

#: Aggregate columns, renamed from scib-metrics' "Batch correction" / "Bio conservation".
TOTAL, BATCH, BIO = "Total", "Batch", "Bio"
_AGGREGATE_RENAME = {"Batch correction": BATCH, "Bio conservation": BIO}
_METRIC_TYPE = "Metric Type"

#: Leading column order: the columns of ``../shared/reference-results.md``; the other metrics follow.
LEADING_COLUMNS = (TOTAL, BATCH, BIO, "iLISI", "KBET", "KMeans NMI", "KMeans ARI", "Silhouette label")

#: ``df.attrs`` key holding ``{column: "Batch correction" | "Bio conservation" | "Aggregate score"}``.
METRIC_TYPE_ATTR = "metric_type"

NeighborFn = Callable[[np.ndarray, int], Any]
#: ``neighbor_computer`` names: scib-metrics' own pynndescent (the default) or :func:`scvi_ext.neighbors.knn`.
NEIGHBORS_PYNNDESCENT, NEIGHBORS_SCVI_EXT = "pynndescent", "scvi_ext"


def _import_benchmark():
    try:
        from scib_metrics import benchmark
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "scib_benchmark needs scib-metrics (and jax): pip install 'scvi-ext[bench]'"
        ) from err
    return benchmark


def _metric_spec(spec, cls, argument: str):
    """Turn ``None`` / ``False`` / a mapping / a dataclass into what ``Benchmarker`` expects."""
    if spec is None:
        return cls()
    if spec is False:
        return None
    if isinstance(spec, cls):
        return spec
    if isinstance(spec, Mapping):
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(spec) - fields)
        if unknown:
            raise ValueError(f"{argument}: unknown metric(s) {unknown}; choose from {sorted(fields)}.")
        # Metrics not named in the mapping keep scib-metrics' default on/off setting.
        return cls(**spec)
    raise TypeError(
        f"{argument} must be None (default set), False (skip), a mapping of metric -> bool/kwargs or "
        f"scib_metrics.benchmark.{cls.__name__}; got {type(spec).__name__}."
    )


def _scvi_ext_knn(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scvi_ext.neighbors.knn` in scib-metrics' convention (self first, Euclidean distances)."""
    from ..neighbors import knn

    return knn(X, k=k, exclude_self=False)


def _neighbor_computer(fn: NeighborFn | str | None, results_cls):
    """Adapt ``fn(X, k) -> (indices, distances)`` (or a ``NeighborsResults``) to the Benchmarker's hook."""
    if fn is None or fn == NEIGHBORS_PYNNDESCENT:
        return None
    if fn == NEIGHBORS_SCVI_EXT:
        fn = _scvi_ext_knn
    if not callable(fn):
        raise ValueError(
            f"neighbor_computer={fn!r} is not supported; pass None / {NEIGHBORS_PYNNDESCENT!r} (scib-metrics' "
            f"pynndescent), {NEIGHBORS_SCVI_EXT!r} (scvi_ext.neighbors.knn) or a callable fn(X, k)."
        )

    def compute(X: np.ndarray, k: int):
        out = fn(np.ascontiguousarray(X, dtype=np.float32), k)
        if isinstance(out, results_cls):
            return out
        indices, distances = (np.asarray(a) for a in out)
        if indices.shape != (X.shape[0], k) or distances.shape != indices.shape:
            raise ValueError(
                f"neighbor_computer returned indices {indices.shape} and distances {distances.shape}; "
                f"expected both ({X.shape[0]}, {k})."
            )
        return results_cls(indices=indices.astype(np.int64), distances=distances.astype(np.float32))

    return compute


def _check_inputs(
    adata: AnnData,
    batch_key: str,
    label_key: str,
    embedding_keys: Sequence[str],
    pre_integrated_key: str,
) -> list[str]:
    """Raise a readable error for every bad argument before any metric runs; return the keys as a list."""
    if isinstance(embedding_keys, str):
        embedding_keys = [embedding_keys]
    keys = list(embedding_keys)
    if not keys:
        raise ValueError("embedding_keys is empty; pass at least one adata.obsm key (e.g. ['X_pca']).")
    if len(set(keys)) != len(keys):
        raise ValueError(f"embedding_keys={keys} contains duplicates.")
    if batch_key == label_key:
        raise ValueError(f"batch_key and label_key are both {batch_key!r}; they must name different columns.")
    for argument, key in (("batch_key", batch_key), ("label_key", label_key)):
        if key not in adata.obs.columns:
            raise KeyError(
                f"{argument}={key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})."
            )
        if adata.obs[key].isna().any():
            raise ValueError(
                f"{argument}={key!r}: adata.obs[{key!r}] has missing values; fill or drop them first."
            )
    if adata.obs[batch_key].nunique() < 2:
        raise ValueError(
            f"batch_key={batch_key!r} has a single value; batch-correction metrics need two or more."
        )
    if adata.obs[label_key].nunique() < 2:
        raise ValueError(
            f"label_key={label_key!r} has a single value; bio-conservation metrics need two or more."
        )
    if adata.n_obs <= MAX_NEIGHBORS:
        raise ValueError(
            f"adata has {adata.n_obs} cells; the scib-metrics Benchmarker needs more than {MAX_NEIGHBORS} "
            f"(it builds a {MAX_NEIGHBORS}-nearest-neighbour graph)."
        )
    for argument, key in [("pre_integrated_key", pre_integrated_key)] + [("embedding_keys", k) for k in keys]:
        if key not in adata.obsm:
            raise KeyError(
                f"{argument}: {key!r} is not in adata.obsm (available: {sorted(adata.obsm.keys())})."
            )
        emb = np.asarray(adata.obsm[key])
        if emb.ndim != 2 or emb.shape[0] != adata.n_obs or emb.shape[1] < 1:
            raise ValueError(
                f"{argument}: adata.obsm[{key!r}] has shape {emb.shape}; expected ({adata.n_obs}, d)."
            )
        if not np.isfinite(emb).all():
            raise ValueError(f"{argument}: adata.obsm[{key!r}] contains NaN or infinite values.")
    return keys


def scib_benchmark(
    adata: AnnData,
    batch_key: str,
    label_key: str,
    embedding_keys: Sequence[str],
    *,
    pre_integrated_key: str = OBSM_KEYS.PCA,
    n_jobs: int = 1,
    min_max_scale: bool = False,
    bio_metrics: Any = None,
    batch_metrics: Any = None,
    neighbor_computer: NeighborFn | str | None = None,
    progress_bar: bool = False,
) -> pd.DataFrame:
    """Score embeddings with the scib-metrics ``Benchmarker`` and return one row per embedding.

    Runs ``Benchmarker(...).prepare()``, ``.benchmark()`` and ``.get_results(min_max_scale=...)`` on a
    lightweight AnnData holding only the two ``obs`` columns and the embeddings (``adata`` is not modified
    and its ``X`` is never read). With the defaults this is the setting of ``../shared/reference-results.md``:
    default metric set, raw (unscaled) scores, the 30-PC PCA as pre-integrated embedding, scib-metrics' own
    pynndescent neighbours.

    Parameters
    ----------
    adata
        AnnData with the embeddings in ``obsm``.
    batch_key
        ``obs`` column with the batches.
    label_key
        ``obs`` column with the cell-type labels.
    embedding_keys
        ``obsm`` keys of the embeddings to score (the row index of the result, in this order).
    pre_integrated_key
        ``obsm`` key of the unintegrated embedding used by the PCR-comparison metric.
    n_jobs
        Threads for the neighbour search.
    min_max_scale
        Min-max scale each metric across the embeddings before aggregating (scib-metrics' plotting
        default). ``False`` keeps raw scores, so a row does not depend on the other rows.
    bio_metrics, batch_metrics
        ``None`` for scib-metrics' default set, ``False`` to skip the whole category (``Total`` is then
        absent), a mapping such as ``{"isolated_labels": False}`` (unnamed metrics keep their default), or a
        ``scib_metrics.benchmark.BioConservation`` / ``BatchCorrection`` instance.
    neighbor_computer
        Neighbour search for the 15/50/90-NN graphs. ``None`` or ``"pynndescent"``: scib-metrics' own
        pynndescent (as the reference results do). ``"scvi_ext"``: :func:`scvi_ext.neighbors.knn` (exact faiss
        search when installed). Or a callable ``fn(X, k) -> (indices, distances)`` (or a scib-metrics
        ``NeighborsResults``) with each cell first in its own row and Euclidean (not squared) distances.
        kBET always runs scib-metrics' pynndescent internally on its diffusion embedding.
    progress_bar
        Show scib-metrics' progress bars.

    Returns
    -------
    pandas.DataFrame
        Float columns, indexed by embedding key (index name ``"embedding"``): ``Total``, ``Batch``, ``Bio``,
        ``iLISI``, ``KBET``, ``KMeans NMI``, ``KMeans ARI``, ``Silhouette label``, then the other computed
        metrics (``Isolated labels``, ``cLISI``, ``BRAS``, ``Graph connectivity``, ``PCR comparison``).
        ``df.attrs["metric_type"]`` maps each column to its scib-metrics category.

    Raises
    ------
    KeyError
        A key is missing from ``adata.obs`` / ``adata.obsm``.
    ValueError
        Bad embeddings (wrong shape, NaN), a single batch or label, too few cells (at most 90), or an unknown
        metric name.

    Examples
    --------
    >>> from scvi_ext.methods import integrate, prepare
    >>> ad = integrate(adata, "harmony", batch_key="lane", prepared=prepare(adata, "lane"))  # doctest: +SKIP
    >>> df = scib_benchmark(ad, "lane", "bulk_labels", ["X_pca", "X_harmony"])  # doctest: +SKIP
    >>> df.loc["X_harmony", "Total"]  # doctest: +SKIP
    0.66...
    """
    keys = _check_inputs(adata, batch_key, label_key, embedding_keys, pre_integrated_key)
    benchmark = _import_benchmark()
    from scib_metrics.nearest_neighbors import NeighborsResults

    compute_neighbors = _neighbor_computer(neighbor_computer, NeighborsResults)
    bio = _metric_spec(bio_metrics, benchmark.BioConservation, "bio_metrics")
    batch = _metric_spec(batch_metrics, benchmark.BatchCorrection, "batch_metrics")
    if bio is None and batch is None:
        raise ValueError("bio_metrics and batch_metrics are both False; enable at least one category.")
    for argument, spec in (("bio_metrics", bio), ("batch_metrics", batch)):
        if spec is not None and not any(v is not False for v in vars(spec).values()):
            raise ValueError(f"{argument} enables no metric; pass False to skip the category instead.")

    import anndata

    obs = pd.DataFrame(
        {
            batch_key: adata.obs[batch_key].astype(str).to_numpy(),
            label_key: adata.obs[label_key].astype(str).to_numpy(),
        },
        index=adata.obs_names.copy(),
    )
    obsm = {k: np.asarray(adata.obsm[k], dtype=np.float32) for k in {*keys, pre_integrated_key}}
    light = anndata.AnnData(obs=obs, obsm=obsm)

    bm = benchmark.Benchmarker(
        light,
        batch_key=batch_key,
        label_key=label_key,
        embedding_obsm_keys=keys,
        bio_conservation_metrics=bio,
        batch_correction_metrics=batch,
        pre_integrated_embedding_obsm_key=pre_integrated_key,
        n_jobs=n_jobs,
        progress_bar=progress_bar,
    )
    bm.prepare(neighbor_computer=compute_neighbors)
    bm.benchmark()
    raw = bm.get_results(min_max_scale=min_max_scale, clean_names=True)
    return _tidy(raw, keys)


def _tidy(raw: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Drop the "Metric Type" row, rename the aggregates, order the columns and make everything float."""
    metric_type = raw.loc[_METRIC_TYPE].rename(_AGGREGATE_RENAME).to_dict()
    df = raw.drop(index=_METRIC_TYPE).rename(columns=_AGGREGATE_RENAME).loc[keys].astype(np.float64)
    leading = [c for c in LEADING_COLUMNS if c in df.columns]
    df = df[leading + [c for c in df.columns if c not in leading]]
    df.index.name = "embedding"
    df.columns.name = None
    df.attrs[METRIC_TYPE_ATTR] = {c: metric_type[c] for c in df.columns}
    return df
