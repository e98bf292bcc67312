"""``scvi_ext.metrics.trustworthiness``: scikit-learn's value from kNN lists."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.manifold import trustworthiness as sk_trustworthiness

from scvi_ext.metrics import _trust, trustworthiness
from scvi_ext.neighbors import knn


@pytest.mark.parametrize("n,d,k", [(40, 4, 3), (300, 12, 30), (600, 8, 15)])
def test_matches_sklearn(n, d, k):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, d)).astype(np.float32)
    E = (X[:, : d // 2] + 0.5 * rng.standard_normal((n, d // 2))).astype(np.float32)
    ref = sk_trustworthiness(X, E, n_neighbors=k)
    assert 0.5 < ref < 1.0
    # distance ties of scikit-learn's float32 values may be ordered either way: agree to a few rank units
    assert trustworthiness(X, E, k) == pytest.approx(ref, abs=1e-5)
    given = trustworthiness(
        X, E, k, indices=knn(X, k=k, backend="blas")[0], indices_embedded=knn(E, k=k, backend="sklearn")[0]
    )
    assert given == pytest.approx(ref, abs=1e-5)


def test_identity_chunks_and_unsorted_lists(monkeypatch):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 6))
    assert trustworthiness(X, X, 10) == 1.0
    E = X[:, :2]
    full = trustworthiness(X, E, 10)
    monkeypatch.setattr(_trust, "_ROW_CHUNK", 7)
    ie = knn(E, k=10)[0][:, ::-1]  # any order within a row
    assert trustworthiness(X, E, 10, indices_embedded=ie) == pytest.approx(full, abs=1e-12)


def test_bad_input():
    X = np.zeros((10, 2))
    X[:, 0] = np.arange(10)
    with pytest.raises(ValueError, match="n_neighbors=5"):
        trustworthiness(X, X, 5)
    with pytest.raises(ValueError, match="rows"):
        trustworthiness(X, X[:9], 2)
    with pytest.raises(ValueError, match="indices"):
        trustworthiness(X, X, 2, indices=np.zeros((10, 3), dtype=int))
