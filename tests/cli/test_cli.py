from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scvi_ext.cli import main


def test_import_is_fast():
    code = "import time; t=time.perf_counter(); import scvi_ext; print(time.perf_counter()-t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 1.0
    code = "import sys, scvi_ext; print(any(m in sys.modules for m in ('torch', 'scvi', 'scanpy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_demo_writes_outputs(tmp_path, capsys):
    t = time.perf_counter()
    rc = main(["demo", "--methods", "pca,harmony", "--out", str(tmp_path / "demo"), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "demo" / "integrated.h5ad") in printed
    res = ad.read_h5ad(tmp_path / "demo" / "integrated.h5ad")
    assert res.shape == (700, 765) and {"X_pca", "X_harmony"} <= set(res.obsm)
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"pca", "harmony"}
    # Harmony mixes the 8 lanes at least as well as PCA
    assert metrics["methods"]["harmony"]["batch_entropy"] >= metrics["methods"]["pca"]["batch_entropy"] - 0.01
    assert (tmp_path / "demo" / "metrics.md").read_text().startswith("# Integration metrics")
    png = (tmp_path / "demo" / "umap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert time.perf_counter() - t < 240


@pytest.fixture()
def small_h5ad(tmp_path):
    rng = np.random.default_rng(0)
    obs = pd.DataFrame({"b": ["x", "y"] * 30, "ct": ["t1", "t2", "t3"] * 20}, index=[f"c{i}" for i in range(60)])
    a = ad.AnnData(rng.poisson(3, (60, 40)).astype(np.float32), obs=obs)
    path = tmp_path / "small.h5ad"
    a.write_h5ad(path)
    return path


def test_integrate_command(small_h5ad, tmp_path):
    out = tmp_path / "o"
    rc = main(["integrate", "--input", str(small_h5ad), "--method", "pca", "--batch-key", "b", "--labels-key", "ct",
               "--out", str(out), "--no-plot"])
    assert rc == 0
    res = ad.read_h5ad(out / "integrated.h5ad")
    assert res.obsm["X_pca"].shape[0] == 60


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--batch-key", "nope"], "batch_key='nope' is not a column"),
        (["--batch-key", "b", "--method", "nope"], "method='nope' is not available"),
        (["--batch-key", "b", "--layer", "counts"], "layer='counts'"),
        (["--batch-key", "b", "--labels-key", "zzz"], "labels_key='zzz'"),
    ],
)
def test_bad_input_exit_code_and_one_line(small_h5ad, tmp_path, capsys, args, match):
    argv = ["integrate", "--input", str(small_h5ad), "--method", "pca", "--out", str(tmp_path / "o"), *args]
    # the later --method wins in argparse
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scvi-ext: error:") and match in err and len(err.splitlines()) == 1


def test_missing_input_file(tmp_path, capsys):
    assert main(["integrate", "--input", str(tmp_path / "x.h5ad"), "--method", "pca", "--batch-key", "b"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_console_script_runs():
    exe = str(Path(sys.executable).parent / "scvi-ext")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "integrate" in out.stdout


def test_save_model_and_map_query(pbmc_counts, tmp_path):
    """Reference lanes 1-6 -> saved PIANO model; lanes 7-8 mapped as a query with label transfer."""
    lanes = pbmc_counts.obs["lane"].astype(str)
    ref, query = pbmc_counts[~lanes.isin(["7", "8"])].copy(), pbmc_counts[lanes.isin(["7", "8"])].copy()
    ref.write_h5ad(tmp_path / "ref.h5ad")
    query.obs = query.obs.drop(columns=["bulk_labels"])
    query.write_h5ad(tmp_path / "query.h5ad")
    model_dir = tmp_path / "model"
    rc = main(["integrate", "--input", str(tmp_path / "ref.h5ad"), "--method", "piano", "--batch-key", "lane",
               "--labels-key", "bulk_labels", "--save-model", str(model_dir), "--max-epochs", "20",
               "--out", str(tmp_path / "ref_out"), "--no-progress", "--accelerator", "cpu"])
    assert rc == 0 and (model_dir / "model.pt").is_file()
    rc = main(["map-query", "--input", str(tmp_path / "query.h5ad"), "--model-dir", str(model_dir),
               "--batch-key", "lane", "--max-epochs", "2", "--out", str(tmp_path / "q"), "--no-progress",
               "--accelerator", "cpu"])
    assert rc == 0
    mapped = ad.read_h5ad(tmp_path / "q" / "mapped.h5ad")
    assert mapped.obsm["X_piano"].shape == (query.n_obs, 32)
    pred = mapped.obs["predicted_bulk_labels"].astype(str).to_numpy()
    truth = pbmc_counts.obs.loc[mapped.obs_names, "bulk_labels"].astype(str).to_numpy()
    majority = pd.Series(truth).value_counts(normalize=True).iloc[0]
    assert (pred == truth).mean() > majority + 0.2
    assert ((mapped.obs["predicted_bulk_labels_confidence"] > 0) & (mapped.obs["predicted_bulk_labels_confidence"] <= 1)).all()


def test_map_query_without_model(tmp_path, small_h5ad, capsys):
    assert main(["map-query", "--input", str(small_h5ad), "--model-dir", str(tmp_path / "none")]) == 2
    assert "has no" in capsys.readouterr().err
