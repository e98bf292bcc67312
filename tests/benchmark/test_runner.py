"""The benchmark runner end to end (``scvi-ext benchmark`` == ``benchmarks/run.py``)."""

from __future__ import annotations

import json

import pytest

from scvi_ext.cli import main


def test_benchmark_cli_scores_and_writes(shared_data, tmp_path):
    data = shared_data / "cider_pancreas_baron" / "cider_pancreas_baron.h5ad"
    rc = main(["benchmark", "--dataset", str(data), "--batch-key", "sample", "--labels-key", "cell_type",
               "--methods", "pca,harmony", "--name", "pancreas_test", "--out", str(tmp_path),
               "--neighbors", "scvi_ext"])
    assert rc == 0
    res = json.loads((tmp_path / "pancreas_test.json").read_text())
    pca, harmony = res["methods"]["pca"]["metrics"], res["methods"]["harmony"]["metrics"]
    # the same pipeline as ../shared/reference-results.md: PCA row reproduces its Total (0.520) closely
    assert abs(pca["Total"] - 0.520) < 0.02
    assert harmony["Batch"] > pca["Batch"]
    md = (tmp_path / "pancreas_test.md").read_text()
    assert "| pca |" in md and "| harmony |" in md and "benchmarks/run.py --dataset" in md


@pytest.mark.parametrize(
    "extra",
    [["--methods", "nope"], ["--labels-key", "missing"], ["--threads", "0"]],
)
def test_benchmark_cli_bad_arguments_exit_2(shared_data, tmp_path, extra):
    data = shared_data / "cider_pancreas_baron" / "cider_pancreas_baron.h5ad"
    argv = ["benchmark", "--dataset", str(data), "--batch-key", "sample", "--labels-key", "cell_type",
            "--out", str(tmp_path), *extra]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert not any(tmp_path.iterdir())
