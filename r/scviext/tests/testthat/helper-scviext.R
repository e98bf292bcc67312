# Shared helpers. Python-backed tests need RETICULATE_PYTHON pointing at an interpreter with scvi_ext
# (`make test-r` sets it to the project's .venv); without it they skip with that message.

python_ready <- function() {
  isTRUE(tryCatch(scviext_available("pca"), error = function(e) FALSE))
}

skip_if_no_python <- function() {
  if (!python_ready()) skip("no Python with scvi_ext: set RETICULATE_PYTHON (make test-r does)")
}

# Skip (with the model's name) when a suite model has not landed in the Python package yet.
skip_if_method_missing <- function(method) {
  skip_if_no_python()
  if (!scviext_available(method) && !scviext_available(method, model = TRUE)) {
    skip(sprintf("model '%s' not available in scvi_ext yet", method))
  }
}

shared_data <- function(...) {
  roots <- c(Sys.getenv("SCVIEXT_SHARED_DATA"), "../../../../../shared/data", "../../../../shared/data",
             "/work/shared/data")
  for (r in roots[nzchar(roots)]) {
    p <- file.path(r, ...)
    if (file.exists(p)) return(normalizePath(p))
  }
  NULL
}

# Baron pancreas (CIDER), 350 cells, 6 samples, 5 cell types; cell names made unique (the file has 22
# duplicated names, which RunScviExt rejects with a message saying how to fix them). The object is rebuilt
# rather than renamed: under SeuratObject 5, colnames() are the already deduplicated meta.data rownames
# while the assay keeps the duplicates, and RenameCells() fails on them.
load_pancreas <- function(nfeatures = 1000) {
  skip_if_not_installed("Seurat")
  path <- shared_data("cider_pancreas_baron", "pancreas.RData")
  if (is.null(path)) skip("../shared/data/cider_pancreas_baron/pancreas.RData not found")
  env <- new.env()
  load(path, envir = env)
  p <- env$pancreas
  counts <- SeuratObject::GetAssayData(p[["RNA"]], "counts")  # 2nd argument: `slot` in v4, `layer` in v5
  colnames(counts) <- make.unique(colnames(counts))
  meta <- p[[]]
  rownames(meta) <- colnames(counts)
  p <- SeuratObject::CreateSeuratObject(counts = counts, meta.data = meta, project = "pancreas")
  p <- Seurat::NormalizeData(p, verbose = FALSE)
  Seurat::FindVariableFeatures(p, nfeatures = nfeatures, verbose = FALSE)
}

# Kang IFN-beta PBMC ctrl/stim (harmony's pbmc_stim.RData: two count matrices) as one Seurat object.
load_pbmc_stim <- function(n_per_condition = 300, nfeatures = 1000) {
  skip_if_not_installed("Seurat")
  path <- shared_data("kang_ifnb_harmony_subset", "pbmc_stim.RData")
  if (is.null(path)) skip("../shared/data/kang_ifnb_harmony_subset/pbmc_stim.RData not found")
  env <- new.env()
  load(path, envir = env)
  counts <- cbind(env$pbmc.ctrl[, seq_len(n_per_condition)], env$pbmc.stim[, seq_len(n_per_condition)])
  obj <- SeuratObject::CreateSeuratObject(counts = counts, project = "kang")
  obj$stim <- rep(c("CTRL", "STIM"), each = n_per_condition)
  obj <- Seurat::NormalizeData(obj, verbose = FALSE)
  suppressWarnings(Seurat::FindVariableFeatures(obj, nfeatures = nfeatures, verbose = FALSE))  # loess notes
}

pbmc_small_obj <- function() {
  e <- new.env()
  utils::data("pbmc_small", package = "SeuratObject", envir = e)
  e$pbmc_small
}
