# Python-backed tests with the baselines that exist in every scvi_ext (harmony, scvi): the generic core.

test_that("RunScviExt adds a DimReduc with the cells' names and records the call (pbmc_small, harmony)", {
  skip_if_no_python()
  obj <- pbmc_small_obj()
  out <- RunScviExt(obj, method = "harmony", batch = "groups", features = rownames(obj), verbose = FALSE)
  emb <- SeuratObject::Embeddings(out, "harmony")
  expect_equal(rownames(emb), colnames(obj))
  expect_equal(ncol(emb), 30L)
  expect_true(all(is.finite(emb)))
  expect_true("RunScviExt.RNA" %in% names(out@commands))
  expect_equal(SeuratObject::Misc(out[["harmony"]])$python$path, "registry")
  # log-normalised input for a method that takes it
  out2 <- RunScviExt(obj, method = "harmony", batch = "groups", layer = "data", reduction.name = "h2",
                     features = rownames(obj), verbose = FALSE)
  expect_equal(dim(SeuratObject::Embeddings(out2, "h2")), c(80L, 30L))
})

test_that("scvi through the core: seed reproducible, model_dir saved, query mapped with labels", {
  skip_if_no_python()
  obj <- pbmc_small_obj()
  a <- RunScviExt(obj, method = "scvi", batch = "groups", features = rownames(obj), max_epochs = 2,
                  seed = 3, n_threads = 1, verbose = FALSE)
  b <- RunScviExt(obj, method = "scvi", batch = "groups", features = rownames(obj), max_epochs = 2,
                  seed = 3, n_threads = 1, verbose = FALSE)
  expect_equal(SeuratObject::Embeddings(a, "scvi"), SeuratObject::Embeddings(b, "scvi"), tolerance = 1e-5)
  dir <- file.path(tempdir(), "scvi_ref")
  ref <- RunScviExt(obj, method = "scvi", batch = "groups", features = rownames(obj), max_epochs = 2,
                    model_dir = dir, labels = "RNA_snn_res.1", covariates = "nCount_RNA", n_latent = 6,
                    verbose = FALSE)
  expect_equal(ncol(SeuratObject::Embeddings(ref, "scvi")), 6L)
  expect_true(file.exists(file.path(dir, "model.pt")))
  expect_true(file.exists(file.path(dir, "scviext_r.json")))
  q <- MapQueryScviExt(obj, dir, batch = "letter.idents", max_epochs = 1, verbose = FALSE)
  expect_equal(dim(SeuratObject::Embeddings(q, "ref.scvi")), c(80L, 6L))
  expect_true(all(q$predicted.RNA_snn_res.1 %in% as.character(obj$RNA_snn_res.1)))
  expect_true(all(q$predicted.RNA_snn_res.1.score > 0 & q$predicted.RNA_snn_res.1.score <= 1))
  expect_error(MapQueryScviExt(obj, dir, batch = "nope", verbose = FALSE), "not a meta.data column")
})

test_that("IntegrateLayers methods run on a v4 Assay with groups (pbmc_stim, real data)", {
  skip_if_no_python()
  obj <- load_pbmc_stim(n_per_condition = 150, nfeatures = 500)
  res <- ScviExtIntegration(obj[["RNA"]], groups = obj[["stim"]], method = "harmony", layer = "data",
                            new.reduction = "integrated.harmony", verbose = FALSE)
  expect_named(res, "integrated.harmony")
  expect_s4_class(res[[1]], "DimReduc")
  expect_equal(rownames(SeuratObject::Embeddings(res[[1]])), colnames(obj))
  obj[["integrated.harmony"]] <- res[[1]]
  expect_true("integrated.harmony" %in% SeuratObject::Reductions(obj))
})

test_that("a Python error comes back as one R error", {
  skip_if_no_python()
  expect_error(scviext:::.scviext_call("read_model_info", tempdir()), "scvi_ext \\(Python\\) failed")
})

test_that("a Python without scvi_ext gives an R error that says what to do", {
  skip_if_no_python()
  # reticulate puts the .venv first on PATH once Python runs: look at the system interpreters
  candidates <- unique(c("/usr/bin/python3", "/usr/local/bin/python3", unname(Sys.which("python3"))))
  lacks <- vapply(candidates, function(p) {
    nzchar(p) && file.exists(p) &&
      system2(p, c("-c", shQuote("import scvi_ext")), stdout = FALSE, stderr = FALSE) != 0
  }, logical(1))
  if (!any(lacks)) skip("no system python3 without scvi_ext to test with")
  py <- candidates[lacks][1]
  script <- tempfile(fileext = ".R")
  writeLines(c('suppressMessages(library(scviext))',
               'e <- new.env(); utils::data("pbmc_small", package = "SeuratObject", envir = e)',
               'r <- tryCatch(RunScviExt(e$pbmc_small, method = "harmony", batch = "groups"),',
               '              error = function(err) conditionMessage(err))',
               'cat(r)'), script)
  out <- system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE,
                 env = c(paste0("RETICULATE_PYTHON=", py)))
  expect_match(paste(out, collapse = " "), "cannot import 'scvi_ext'.*install_scviext")
})
