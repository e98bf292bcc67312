"""Bad input gets a clear, early error and the user's AnnData is left unchanged."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scvi_ext import _validation as v
from scvi_ext.methods import integrate, prepare


def _adata(X, batches=("a", "b")) -> ad.AnnData:
    n = X.shape[0]
    obs = pd.DataFrame({"batch": [batches[i % len(batches)] for i in range(n)]}, index=[f"c{i}" for i in range(n)])
    return ad.AnnData(X=X, obs=obs)


def _counts(n=40, g=30, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(2.0, (n, g)).astype(np.float32)


@pytest.mark.parametrize("sparse", [False, True])
def test_check_counts_accepts_integers(sparse):
    X = _counts()
    v.check_counts(sp.csr_matrix(X) if sparse else X)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda X: X.__setitem__((0, 0), np.nan), "NaN or infinite"),
        (lambda X: X.__setitem__((0, 0), np.inf), "NaN or infinite"),
        (lambda X: X.__setitem__((0, 0), -1.0), "negative"),
        (lambda X: X.__setitem__((0, 0), 0.5), "integer counts"),
    ],
)
@pytest.mark.parametrize("sparse", [False, True])
def test_check_counts_rejects(mutate, match, sparse):
    X = _counts()
    X[0, 0] = 1.0
    mutate(X)
    with pytest.raises(ValueError, match=match):
        v.check_counts(sp.csr_matrix(X) if sparse else X, "layer 'counts'")


def test_missing_obs_key_names_argument_and_columns():
    a = _adata(_counts())
    with pytest.raises(KeyError, match=r"batch_key='nope'.*columns: 'batch'"):
        v.check_obs_key(a, "nope")


def test_obs_key_with_missing_values():
    a = _adata(_counts())
    a.obs.loc["c0", "batch"] = None
    with pytest.raises(ValueError, match="missing values"):
        v.check_obs_key(a, "batch")


def test_single_batch_rejected():
    a = _adata(_counts(), batches=("only",))
    with pytest.raises(ValueError, match="at least 2"):
        v.check_n_categories(a, "batch")


def test_missing_layer():
    a = _adata(_counts())
    with pytest.raises(KeyError, match="layer='counts' is not in adata.layers"):
        v.get_matrix(a, "counts")


def test_empty_adata():
    a = _adata(np.zeros((0, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="empty"):
        v.check_nonempty(a)


def test_query_features():
    with pytest.raises(ValueError, match="lacks 1 of the reference's 3 features"):
        v.check_query_features(["a", "b", "c"], ["a", "b"])


@pytest.mark.parametrize(
    ("make", "kwargs", "err", "match"),
    [
        (lambda: _adata(_counts()), {"batch_key": "missing"}, KeyError, "batch_key='missing'"),
        (lambda: _adata(_counts(), batches=("x",)), {"batch_key": "batch"}, ValueError, "at least 2"),
        (lambda: _adata(_counts() + 0.25), {"batch_key": "batch"}, ValueError, "integer counts"),
        (lambda: _adata(-_counts() - 1), {"batch_key": "batch"}, ValueError, "negative"),
        (lambda: _adata(np.zeros((0, 4), np.float32)), {"batch_key": "batch"}, ValueError, "empty"),
        (lambda: _adata(_counts()), {"batch_key": "batch", "layer": "counts"}, KeyError, "layer='counts'"),
    ],
)
def test_integrate_rejects_bad_input_before_work_and_leaves_adata_unchanged(make, kwargs, err, match):
    a = make()
    before = a.copy()
    with pytest.raises(err, match=match):
        integrate(a, "pca", **kwargs)
    assert a.obs.equals(before.obs)
    assert list(a.layers) == list(before.layers) and list(a.obsm) == list(before.obsm)
    np.testing.assert_array_equal(np.asarray(a.X), np.asarray(before.X))


def test_integrate_nan_rejected():
    X = _counts()
    X[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        prepare(_adata(X), "batch")


def test_unknown_method():
    with pytest.raises(ValueError, match="method='nope' is not available"):
        integrate(_adata(_counts()), "nope", batch_key="batch")
