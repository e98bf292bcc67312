# Seurat 5 (SeuratObject >= 5.0.0): the five IntegrateLayers methods on a split Assay5, RunScviExt and
# MapQueryScviExt on v5 objects, with the real Kang IFN-beta ctrl/stim PBMCs. Under Seurat 4 (Debian's
# library) every test here skips; test-suite-methods.R covers the v4 paths. How these were run against a
# real Seurat 5: benchmarks/results/r/seurat5.md.

skip_if_not_seurat5 <- function() {
  v <- utils::packageVersion("SeuratObject")
  if (v < "5.0.0") {
    skip(sprintf("Seurat 5 tests need SeuratObject >= 5.0.0 (installed: %s)", v))
  }
  skip_if_not_installed("Seurat", "5.0.0")
}

# Evaluate `expr` with Seurat's assay version option set ("v3": Seurat 4 Assay, "v5": Assay5).
with_assay_version <- function(version, expr) {
  old <- options(Seurat.object.assay.version = version)
  on.exit(options(old))
  expr
}

# pbmc_stim as a v5 object, split by condition, with the standard Seurat 5 preprocessing (normalise,
# variable features, scale, PCA) run per layer. from_v4 = TRUE builds a Seurat 4 Assay first and converts it
# with as(, "Assay5"); FALSE lets CreateSeuratObject make the Assay5 (the Seurat 5 default).
v5_pbmc_stim <- function(n_per_condition = 150, nfeatures = 500, from_v4 = TRUE) {
  version <- if (from_v4) "v3" else "v5"
  obj <- with_assay_version(version, load_pbmc_stim(n_per_condition = n_per_condition, nfeatures = nfeatures))
  if (from_v4) {
    stopifnot(!methods::is(obj[["RNA"]], "Assay5"))
    suppressWarnings(obj[["RNA"]] <- methods::as(obj[["RNA"]], "Assay5"))  # "changing from Assay to Assay5"
  }
  obj[["RNA"]] <- split(obj[["RNA"]], f = obj$stim)
  obj <- Seurat::NormalizeData(obj, verbose = FALSE)
  obj <- suppressWarnings(Seurat::FindVariableFeatures(obj, nfeatures = nfeatures, verbose = FALSE))
  obj <- Seurat::ScaleData(obj, verbose = FALSE)
  Seurat::RunPCA(obj, npcs = 20, verbose = FALSE)
}

test_that("Seurat 5: the v5 object has split count layers and scviext reads them joined", {
  skip_if_not_seurat5()
  # a Seurat 4 Assay under SeuratObject 5 (GetAssayData's 2nd argument is `layer` there)
  v4 <- with_assay_version("v3", load_pbmc_stim(n_per_condition = 50))
  expect_false(methods::is(v4[["RNA"]], "Assay5"))
  expect_equal(dim(scviext:::.assay_layer(v4[["RNA"]], "counts")), dim(v4))
  expect_equal(scviext:::.assay_layer(v4[["RNA"]], "data")@x, SeuratObject::LayerData(v4, layer = "data")@x)
  for (from_v4 in c(TRUE, FALSE)) {
    obj <- v5_pbmc_stim(from_v4 = from_v4)
    expect_s4_class(obj[["RNA"]], "Assay5")
    expect_setequal(SeuratObject::Layers(obj[["RNA"]], search = "counts"), c("counts.CTRL", "counts.STIM"))
    m <- scviext:::.assay_layer(obj[["RNA"]], "counts")
    expect_s4_class(m, "dgCMatrix")
    expect_equal(colnames(m), colnames(obj))
    expect_equal(nrow(m), nrow(obj))
    expect_equal(sum(m), sum(obj$nCount_RNA))
    groups <- scviext:::.groups_from_layers(scviext:::.layer_cells(obj[["RNA"]], "counts"))
    expect_equal(groups[colnames(obj), 1], obj$stim, ignore_attr = TRUE)
  }
})

integration_fns <- c(piano = "PIANOIntegration", sysvi = "SysVIIntegration", sccraft = "scCRAFTIntegration",
                     uniport = "UniPortIntegration", scbiot = "scBIOTIntegration")

for (method in names(integration_fns)) {
  local({
    m <- method
    fn_name <- integration_fns[[m]]
    test_that(sprintf("Seurat 5: IntegrateLayers(method = %s) on a split Assay5 (pbmc_stim)", fn_name), {
      skip_if_not_seurat5()
      skip_if_method_missing(m)
      obj <- v5_pbmc_stim()
      red <- paste0("integrated.", m)
      fn <- get(fn_name, envir = asNamespace("scviext"))
      out <- Seurat::IntegrateLayers(obj, method = fn, new.reduction = red, max_epochs = 2, n_threads = 1,
                                     verbose = FALSE)
      expect_true(red %in% SeuratObject::Reductions(out))
      emb <- SeuratObject::Embeddings(out, red)
      expect_setequal(rownames(emb), colnames(obj))
      expect_true(all(is.finite(emb)))
      expect_equal(SeuratObject::Misc(out[[red]])$method, m)
      # the layers stay split (IntegrateLayers must not join the user's object)
      expect_length(SeuratObject::Layers(out[["RNA"]], search = "counts"), 2L)
      # the result feeds the usual Seurat 5 downstream steps
      out <- Seurat::FindNeighbors(out, reduction = red, dims = 1:5, verbose = FALSE)
      expect_true(length(SeuratObject::Graphs(out)) > 0)
    })
  })
}

test_that("Seurat 5: RunScviExt on a v5 object (split and joined layers) and MapQueryScviExt", {
  skip_if_not_seurat5()
  skip_if_no_python()
  obj <- v5_pbmc_stim(from_v4 = FALSE)
  m <- intersect(c("sysvi", scviext_methods()), scviext_config()$models)[1]
  if (is.na(m)) m <- "scvi"
  out <- RunScviExt(obj, method = m, batch = "stim", max_epochs = 2, n_threads = 1, verbose = FALSE)
  emb <- SeuratObject::Embeddings(out, m)
  expect_setequal(rownames(emb), colnames(obj))
  expect_true(all(is.finite(emb)))
  expect_true(paste0("RunScviExt.RNA") %in% names(out@commands))

  joined <- obj
  joined[["RNA"]] <- SeuratObject::JoinLayers(joined[["RNA"]])
  out_j <- RunScviExt(joined, method = m, batch = "stim", max_epochs = 2, n_threads = 1, verbose = FALSE)
  expect_equal(rownames(SeuratObject::Embeddings(out_j, m)), colnames(joined))

  # reference (CTRL + STIM minus a held-out quarter) saved with cluster labels (the data ship no cell
  # types), the held-out v5 cells mapped with label transfer
  obj <- Seurat::FindNeighbors(obj, dims = 1:10, verbose = FALSE)
  obj <- Seurat::FindClusters(obj, resolution = 0.5, verbose = FALSE)
  held_out <- seq_len(ncol(obj)) %% 4 == 0
  ref <- obj[, !held_out]
  query <- obj[, held_out]
  expect_s4_class(query[["RNA"]], "Assay5")
  dir <- file.path(tempdir(), paste0("v5_ref_", m))
  ref <- RunScviExt(ref, method = m, batch = "stim", max_epochs = 2, model_dir = dir,
                    labels = "seurat_clusters", n_threads = 1, verbose = FALSE)
  expect_true(file.exists(file.path(dir, "scviext_r.json")))
  q <- MapQueryScviExt(query, dir, batch = "stim", max_epochs = 1, n_threads = 1, verbose = FALSE)
  qe <- SeuratObject::Embeddings(q, paste0("ref.", m))
  expect_setequal(rownames(qe), colnames(query))
  expect_equal(ncol(qe), ncol(SeuratObject::Embeddings(ref, m)))
  expect_true(all(is.finite(qe)))
  expect_true(all(q$predicted.seurat_clusters %in% as.character(ref$seurat_clusters)))
  expect_true(all(q$predicted.seurat_clusters.score > 0 & q$predicted.seurat_clusters.score <= 1))
})
