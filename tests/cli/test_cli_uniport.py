"""``scvi-ext transfer-labels`` and ``scvi-ext deconvolve`` (uniPort) on shared data, and their bad-input errors."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scvi_ext.cli import main

FAST = ["--no-progress", "--accelerator", "cpu", "--seed", "0"]


@pytest.fixture(autouse=True)
def _single_thread():
    """uniPort's tiny minibatch solves thrash with 2 OpenMP threads on a loaded box (as tests/uniport)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def pbmc_two_sets(pbmc_counts, tmp_path):
    """pbmc68k split into two datasets by lane (1-4 = 'ref' with labels, 5-8 = 'query')."""
    a = pbmc_counts.copy()
    lane = a.obs["lane"].astype(int)
    a.obs["dataset"] = pd.Categorical(np.where(lane <= 4, "ref", "query"), categories=["query", "ref"])
    path = tmp_path / "two.h5ad"
    a.write_h5ad(path)
    return path, a


def _one_line_error(capsys, match: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("scvi-ext: error:") and match in err and len(err.splitlines()) == 1, err


def test_transfer_labels_knn_on_pbmc(pbmc_two_sets, tmp_path):
    path, a = pbmc_two_sets
    out = tmp_path / "tl"
    rc = main(
        [
            "transfer-labels",
            "--input",
            str(path),
            "--source-key",
            "dataset",
            "--reference",
            "ref",
            "--labels-key",
            "bulk_labels",
            "--max-iterations",
            "100",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert rc == 0
    table = pd.read_csv(out / "predicted_labels.csv", index_col=0)
    query = a.obs_names[(a.obs["dataset"] == "query").to_numpy()]
    assert list(table.index) == list(query)
    truth = a.obs.loc[table.index, "bulk_labels"].astype(str).to_numpy()
    pred = table["predicted_bulk_labels"].astype(str).to_numpy()
    assert set(pred) <= set(a.obs["bulk_labels"].astype(str))
    chance = 1.0 / a.obs["bulk_labels"].nunique()
    assert (pred == truth).mean() > chance + 0.2
    assert ((table["confidence"] > 0) & (table["confidence"] <= 1 + 1e-9)).all()
    res = ad.read_h5ad(out / "transferred.h5ad")
    assert res.obsm["X_uniport"].shape == (a.n_obs, 16)
    assert res.obs["predicted_bulk_labels"].notna().sum() == len(query)


def test_transfer_labels_ot_from_h5mu(pbmc_two_sets, tmp_path):
    mudata = pytest.importorskip("mudata")
    _, a = pbmc_two_sets
    mods = {n: a[(a.obs["dataset"] == n).to_numpy()].copy() for n in ("query", "ref")}
    path = tmp_path / "two.h5mu"
    mudata.MuData(mods).write(path)
    out = tmp_path / "tl_ot"
    rc = main(
        [
            "transfer-labels",
            "--input",
            str(path),
            "--reference",
            "ref",
            "--labels-key",
            "bulk_labels",
            "--method",
            "ot",
            "--max-iterations",
            "30",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert rc == 0
    table = pd.read_csv(out / "predicted_labels.csv", index_col=0)
    assert len(table) == mods["query"].n_obs and (table["dataset"] == "query").all()
    scores = table.drop(columns=["dataset", "predicted_bulk_labels", "confidence"])
    np.testing.assert_allclose(scores.sum(1).to_numpy(), 1.0, atol=1e-5)


def test_deconvolve_pdac(shared_data, tmp_path):
    folder = shared_data / "pdac_a_spatial"
    cells = ad.read_h5ad(folder / "pdac_a_indrop_sc.h5ad")
    spots = ad.read_h5ad(folder / "pdac_a_st1_spots.h5ad")
    keep = np.random.default_rng(0).permutation(cells.n_obs)[:600]
    cells[np.sort(keep)].copy().write_h5ad(tmp_path / "cells.h5ad")
    spots[:120].copy().write_h5ad(tmp_path / "spots.h5ad")
    out = tmp_path / "dc"
    rc = main(
        [
            "deconvolve",
            "--spots",
            str(tmp_path / "spots.h5ad"),
            "--cells",
            str(tmp_path / "cells.h5ad"),
            "--labels-key",
            "cell_type",
            "--max-iterations",
            "20",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert rc == 0
    props = pd.read_csv(out / "proportions.csv", index_col=0)
    assert props.shape[0] == 120 and list(props.index) == list(spots.obs_names[:120])
    assert set(props.columns) <= set(cells.obs["cell_type"].astype(str))
    np.testing.assert_allclose(props.sum(1).to_numpy(), 1.0, atol=1e-5)
    assert (props.to_numpy() >= 0).all()
    res = ad.read_h5ad(out / "deconvolved.h5ad")
    assert res.obsm["uniport_proportions"].shape == props.shape and "spatial" in res.obsm


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--source-key", "nope", "--reference", "ref", "--labels-key", "bulk_labels"], "source_key='nope'"),
        (
            ["--source-key", "dataset", "--reference", "zzz", "--labels-key", "bulk_labels"],
            "--reference 'zzz'",
        ),
        (["--source-key", "dataset", "--reference", "ref", "--labels-key", "zzz"], "labels_key='zzz'"),
        (["--reference", "ref", "--labels-key", "bulk_labels"], "--source-key is required"),
        (
            ["--source-key", "lane", "--reference", "1", "--labels-key", "bulk_labels", "--layer", "x"],
            "layer",
        ),
    ],
)
def test_transfer_labels_bad_input(pbmc_two_sets, tmp_path, capsys, extra, match):
    path, _ = pbmc_two_sets
    assert main(["transfer-labels", "--input", str(path), "--out", str(tmp_path / "o"), *extra, *FAST]) == 2
    _one_line_error(capsys, match)


def test_deconvolve_bad_input(pbmc_two_sets, tmp_path, capsys):
    path, a = pbmc_two_sets
    argv = ["deconvolve", "--spots", str(path), "--cells", str(path), "--out", str(tmp_path / "o"), *FAST]
    assert main([*argv, "--labels-key", "zzz"]) == 2
    _one_line_error(capsys, "labels_key='zzz'")
    missing = [
        "deconvolve",
        "--spots",
        str(tmp_path / "none.h5ad"),
        "--cells",
        str(path),
        "--labels-key",
        "x",
    ]
    assert main(missing) == 2
    _one_line_error(capsys, "no such file")
    other = a[:, :0].copy()  # no genes in common
    other.write_h5ad(tmp_path / "nogenes.h5ad")
    assert main([*argv[:2], str(tmp_path / "nogenes.h5ad"), *argv[3:], "--labels-key", "bulk_labels"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scvi-ext: error:") and len(err.splitlines()) == 1
