"""scib_benchmark: the scib-metrics Benchmarker wrapper, on real data (Baron pancreas, PCA vs Harmony).

Run time is dominated by one-off compilation: jax for the metrics and numba for pynndescent (about 30 s on a
2-core box). The fast tests therefore replace every approximate neighbour search by an exact one (our
``scvi_ext.neighbors.knn`` for the graphs, a brute-force search inside kBET's diffusion step); on 350 cells
pynndescent is exact anyway. ``SCVI_EXT_FULL=1`` also runs the untouched default path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scvi_ext.metrics._scib import LEADING_COLUMNS, METRIC_TYPE_ATTR, scib_benchmark

pytestmark = pytest.mark.realdata

BATCH, LABELS = "sample", "cell_type"
KEYS = ["X_pca", "X_harmony"]
OTHER_COLUMNS = ("Isolated labels", "cLISI", "BRAS", "Graph connectivity", "PCR comparison")
ONLY_ILISI = {
    "bio": {"isolated_labels": False, "nmi_ari_cluster_labels_kmeans": False, "clisi_knn": False},
    "batch": {"bras": False, "kbet_per_label": False, "graph_connectivity": False, "pcr_comparison": False},
}


def exact_knn(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force Euclidean kNN with self first: the obviously-correct neighbour reference."""
    d2 = ((X[:, None, :].astype(np.float64) - X[None, :, :]) ** 2).sum(-1)
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return idx, np.sqrt(np.take_along_axis(d2, idx, axis=1))


@pytest.fixture(scope="module")
def prepared(pancreas_counts):
    from scvi_ext.methods import integrate, prepare

    ad = prepare(pancreas_counts, BATCH)
    return integrate(pancreas_counts, "harmony", BATCH, prepared=ad)


@pytest.fixture(scope="module")
def exact_neighbors():
    """Swap pynndescent for brute force inside scib-metrics' kBET diffusion step (skips numba compilation)."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from scib_metrics.utils import _diffusion_nn

    def brute_force(X, n_neighbors, random_state=0, n_jobs=1):
        idx, dist = exact_knn(np.asarray(X), n_neighbors)
        return NeighborsResults(indices=idx, distances=dist.astype(np.float32))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_diffusion_nn.nearest_neighbors, "pynndescent", brute_force)
        yield


@pytest.fixture(scope="module")
def scored(prepared, exact_neighbors):
    before = (list(prepared.obs.columns), sorted(prepared.obsm.keys()), prepared.obsm["X_pca"].copy())
    df = scib_benchmark(prepared, BATCH, LABELS, KEYS, neighbor_computer="scvi_ext")
    return df, before


def test_rows_columns_and_range(scored):
    df, _ = scored
    assert list(df.index) == KEYS
    assert tuple(df.columns[: len(LEADING_COLUMNS)]) == LEADING_COLUMNS
    assert set(OTHER_COLUMNS) <= set(df.columns)
    assert all(dtype == np.float64 for dtype in df.dtypes)
    values = df.to_numpy()
    assert np.isfinite(values).all()
    assert (values >= 0).all() and (values <= 1).all()


def test_aggregates_are_scib_means(scored):
    df, _ = scored
    kinds = df.attrs[METRIC_TYPE_ATTR]
    batch_cols = [c for c, k in kinds.items() if k == "Batch correction"]
    bio_cols = [c for c, k in kinds.items() if k == "Bio conservation"]
    assert set(batch_cols) == {"iLISI", "KBET", "BRAS", "Graph connectivity", "PCR comparison"}
    np.testing.assert_allclose(df["Batch"], df[batch_cols].mean(axis=1), atol=1e-12)
    np.testing.assert_allclose(df["Bio"], df[bio_cols].mean(axis=1), atol=1e-12)
    np.testing.assert_allclose(df["Total"], 0.4 * df["Batch"] + 0.6 * df["Bio"], atol=1e-12)


def test_scores_reflect_integration(scored):
    df, _ = scored
    # The pre-integrated embedding scored against itself has no PCR improvement.
    assert df.loc["X_pca", "PCR comparison"] == pytest.approx(0.0, abs=1e-6)
    # Harmony mixes the samples better than the PCA while keeping the cell types.
    assert df.loc["X_harmony", "iLISI"] > df.loc["X_pca", "iLISI"]
    assert df.loc["X_harmony", "Batch"] > df.loc["X_pca", "Batch"]
    assert abs(df.loc["X_harmony", "Bio"] - df.loc["X_pca", "Bio"]) < 0.1


def test_input_not_modified(prepared, scored):
    _, (obs_cols, obsm_keys, pca) = scored
    assert list(prepared.obs.columns) == obs_cols
    assert sorted(prepared.obsm.keys()) == obsm_keys
    np.testing.assert_array_equal(prepared.obsm["X_pca"], pca)


def test_neighbor_computer_hook_and_metric_subset(prepared, scored, exact_neighbors):
    df_full, _ = scored
    calls = []

    def knn(X, k):
        calls.append((X.shape, k))
        return exact_knn(X, k)

    df = scib_benchmark(
        prepared,
        BATCH,
        LABELS,
        KEYS,
        neighbor_computer=knn,
        bio_metrics=ONLY_ILISI["bio"],
        batch_metrics=ONLY_ILISI["batch"],
    )
    assert calls == [((prepared.n_obs, 30), 90)] * 2
    assert list(df.columns) == ["Total", "Batch", "Bio", "iLISI", "Silhouette label"]
    np.testing.assert_allclose(df["Silhouette label"], df_full["Silhouette label"], atol=1e-6)
    # Brute force and scvi_ext.neighbors.knn (faiss) find the same neighbours.
    np.testing.assert_allclose(df["iLISI"], df_full["iLISI"], atol=1e-5)

    scaled = scib_benchmark(
        prepared,
        BATCH,
        LABELS,
        KEYS,
        neighbor_computer=exact_knn,
        min_max_scale=True,
        bio_metrics=ONLY_ILISI["bio"],
        batch_metrics=False,
    )
    assert "Total" not in scaled.columns and "Batch" not in scaled.columns
    np.testing.assert_allclose(scaled["Silhouette label"].sort_values(), [0.0, 1.0])


def _bad(prepared, **overrides):
    kwargs = {"batch_key": BATCH, "label_key": LABELS, "embedding_keys": KEYS} | overrides
    return scib_benchmark(prepared, **kwargs)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"batch_key": "nope"}, KeyError, "batch_key='nope'"),
        ({"label_key": "nope"}, KeyError, "label_key='nope'"),
        ({"label_key": BATCH}, ValueError, "different columns"),
        ({"embedding_keys": []}, ValueError, "embedding_keys is empty"),
        ({"embedding_keys": ["X_pca", "X_pca"]}, ValueError, "duplicates"),
        ({"embedding_keys": ["X_missing"]}, KeyError, "X_missing"),
        ({"pre_integrated_key": "X_missing"}, KeyError, "pre_integrated_key"),
        ({"bio_metrics": {"not_a_metric": True}}, ValueError, "unknown metric"),
        ({"bio_metrics": False, "batch_metrics": False}, ValueError, "both False"),
        ({"batch_metrics": "all"}, TypeError, "batch_metrics"),
        ({"neighbor_computer": "annoy"}, ValueError, "neighbor_computer='annoy'"),
        ({"neighbor_computer": lambda X, k: exact_knn(X, k - 1)}, ValueError, "expected both"),
    ],
)
def test_bad_arguments(prepared, overrides, error, match):
    with pytest.raises(error, match=match):
        _bad(prepared, **overrides)


def test_bad_embeddings(prepared):
    ad = prepared.copy()
    ad.obsm["X_nan"] = np.where(np.eye(ad.n_obs, 5, dtype=bool), np.nan, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        _bad(ad, embedding_keys=["X_nan"])
    ad.obs["one_batch"] = pd.Categorical(["a"] * ad.n_obs)
    with pytest.raises(ValueError, match="single value"):
        _bad(ad, batch_key="one_batch")
    with pytest.raises(ValueError, match="more than 90"):
        _bad(ad[::4].copy())


@pytest.mark.slow
def test_default_neighbors_match_exact(prepared, scored):
    """The untouched default (scib-metrics' pynndescent everywhere) agrees with the exact-neighbour scores."""
    df_exact, _ = scored
    with pytest.MonkeyPatch.context() as mp:
        from scib_metrics.nearest_neighbors._pynndescent import pynndescent
        from scib_metrics.utils import _diffusion_nn

        mp.setattr(_diffusion_nn.nearest_neighbors, "pynndescent", pynndescent)
        df = scib_benchmark(prepared, BATCH, LABELS, KEYS)
    pd.testing.assert_index_equal(df.columns, df_exact.columns)
    np.testing.assert_allclose(df.to_numpy(), df_exact.to_numpy(), atol=0.01)
