"""rpy2 readers and writer: real Seurat files from ../shared/data, a round trip, SingleCellExperiment."""

from __future__ import annotations

import numpy as np
import pytest

rpy2 = pytest.importorskip("rpy2", reason="needs rpy2<3.6 and R (pip install 'scvi-ext[r]')")


def _r_has(package: str) -> bool:
    import shutil
    import subprocess

    rscript = shutil.which("Rscript")
    if rscript is None:
        return False
    code = f'quit(status = as.integer(!requireNamespace("{package}", quietly = TRUE)))'
    return subprocess.run([rscript, "-e", code], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _r_has("SeuratObject"), reason="needs R with SeuratObject (r-cran-seurat)")


@pytest.mark.realdata
def test_read_seurat_rdata_matches_h5ad(shared_data):
    import anndata

    from scvi_ext.interop import read_r

    ad = read_r(shared_data / "cider_pancreas_baron" / "pancreas.RData")
    ref = anndata.read_h5ad(shared_data / "cider_pancreas_baron" / "cider_pancreas_baron.h5ad")
    assert ad.shape == ref.shape
    assert ad.obs["orig.ident"].nunique() == 6
    assert ad.obs_names.is_unique
    assert float(ad.layers["counts"].sum()) == pytest.approx(float(ref.X.sum()))
    assert "data" in ad.layers


@pytest.mark.realdata
def test_read_rdata_with_count_matrices(shared_data):
    from scvi_ext.interop import read_r

    ad = read_r(shared_data / "kang_ifnb_harmony_subset" / "pbmc_stim.RData")
    assert ad.shape == (2000, 9015)
    assert ad.obs["object"].value_counts().to_dict() == {"pbmc.ctrl": 1000, "pbmc.stim": 1000}
    one = read_r(shared_data / "kang_ifnb_harmony_subset" / "pbmc_stim.RData", object_name="pbmc.stim")
    assert one.n_obs == 1000
    with pytest.raises(KeyError, match="object_name='nope'"):
        read_r(shared_data / "kang_ifnb_harmony_subset" / "pbmc_stim.RData", object_name="nope")


def test_write_seurat_round_trip(pbmc_counts, tmp_path):
    from scvi_ext.interop import read_r, write_seurat

    ad = pbmc_counts[:120, :200].copy()
    ad.obsm["X_test"] = np.arange(ad.n_obs * 3, dtype=np.float32).reshape(ad.n_obs, 3)
    path = write_seurat(ad, tmp_path / "x.rds", counts_layer=None)
    back = read_r(path)
    assert list(back.obs_names) == list(ad.obs_names)
    assert list(back.var_names) == [g.replace("_", "-") for g in ad.var_names]
    np.testing.assert_allclose(back.layers["counts"].toarray(), np.asarray(ad.X.todense()))
    np.testing.assert_allclose(back.obsm["X_test"], ad.obsm["X_test"])
    for col in ad.obs.columns:
        assert col in back.obs.columns


def test_read_errors(tmp_path):
    from scvi_ext.interop import read_r

    with pytest.raises(FileNotFoundError):
        read_r(tmp_path / "none.rds")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="expected one of"):
        read_r(tmp_path / "x.txt")


@pytest.mark.skipif(not _r_has("SingleCellExperiment"), reason="needs r-bioc-singlecellexperiment")
def test_read_single_cell_experiment(tmp_path):
    import rpy2.robjects as ro

    from scvi_ext.interop import read_r

    path = tmp_path / "sce.rds"
    ro.r(f"""
      suppressMessages(library(SingleCellExperiment))
      set.seed(0)
      m <- matrix(rpois(200, 2), nrow = 20, dimnames = list(paste0("g", 1:20), paste0("c", 1:10)))
      sce <- SingleCellExperiment(assays = list(counts = m), colData = data.frame(batch = rep(c("a", "b"), 5)))
      saveRDS(sce, "{path}")
    """)
    ad = read_r(path)
    assert ad.shape == (10, 20)
    assert list(ad.obs["batch"]) == ["a", "b"] * 5
    assert "counts" in ad.layers
