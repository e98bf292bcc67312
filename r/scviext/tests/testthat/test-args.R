# Pure-R checks: every bad input fails in R, before any Python work, with a message that says what to do.

test_that("scviext_methods lists the five suite methods first", {
  expect_equal(scviext_methods(), c("piano", "sysvi", "sccraft", "uniport", "scbiot"))
  expect_equal(scviext_methods(TRUE)[6:8], c("scvi", "harmony", "pca"))
})

test_that("unknown method is an R error naming the choices", {
  obj <- pbmc_small_obj()
  expect_error(RunScviExt(obj, method = "magic", batch = "groups"), "Unknown method 'magic'.*piano")
  expect_error(ScviExtIntegration(obj[["RNA"]], method = "magic"), "Unknown method")
})

test_that("missing or unusable meta.data columns are R errors", {
  obj <- pbmc_small_obj()
  expect_error(RunScviExt(obj, method = "scvi", batch = "no_such_column"),
               "`batch` = 'no_such_column' is not a meta.data column")
  expect_error(RunScviExt(obj, method = "scvi", batch = "groups", covariates = "nope"),
               "`covariates` = 'nope' is not a meta.data column")
  expect_error(RunScviExt(obj, method = "scvi", batch = "orig.ident"), "at least 2 batches")
  obj$with_na <- obj$groups
  obj$with_na[3] <- NA
  expect_error(RunScviExt(obj, method = "scvi", batch = "with_na"), "1 missing values")
})

test_that("assay without counts, non-integer counts and unknown features are R errors", {
  obj <- pbmc_small_obj()
  data_only <- SeuratObject::CreateAssayObject(data = SeuratObject::GetAssayData(obj[["RNA"]], "data"))
  obj[["LOG"]] <- data_only
  expect_error(RunScviExt(obj, method = "scvi", batch = "groups", assay = "LOG", features = rownames(obj)),
               "Assay 'LOG' has no 'counts'.*layer = \"data\"")
  expect_error(RunScviExt(obj, method = "scvi", batch = "groups", layer = "data"), "models raw counts")
  expect_error(RunScviExt(obj, method = "scvi", batch = "groups", assay = "NOPE"), "`assay` = 'NOPE'")
  expect_error(RunScviExt(obj, method = "scvi", batch = "groups", features = c("CD3E", "NOT_A_GENE")),
               "1 of the 2 `features` are not in assay")
  obj2 <- pbmc_small_obj()
  # positional layer/slot on the Assay: `slot =` is deprecated in SeuratObject 5 and the Seurat method's
  # 2nd argument differs between versions
  obj2[["RNA"]] <- SeuratObject::SetAssayData(obj2[["RNA"]], "counts",
                                              new.data = SeuratObject::GetAssayData(obj2[["RNA"]], "data"))
  expect_error(RunScviExt(obj2, method = "scvi", batch = "groups"), "non-integer")
  empty <- pbmc_small_obj()
  SeuratObject::VariableFeatures(empty) <- character()
  expect_error(RunScviExt(empty, method = "scvi", batch = "groups"), "FindVariableFeatures")
})

test_that("scalar arguments are checked", {
  obj <- pbmc_small_obj()
  expect_error(RunScviExt(obj, method = "scvi", batch = "groups", max_epochs = 0), "`max_epochs`")
  expect_error(RunScviExt(obj, method = "scvi", batch = "groups", seed = 1.5), "`seed`")
  expect_error(RunScviExt(obj, method = "scvi", batch = "groups", layer = "scale.data"), "`layer`")
  expect_error(RunScviExt("not a seurat", method = "scvi"), "must be a Seurat object")
  expect_error(MapQueryScviExt(obj, tempfile()), "`model_dir` must be a folder")
  d <- tempfile(); dir.create(d)
  expect_error(MapQueryScviExt(obj, d), "no scviext_r.json")
})

test_that("duplicated cell names are refused with the fix in the message (pancreas.RData)", {
  path <- shared_data("cider_pancreas_baron", "pancreas.RData")
  if (is.null(path)) skip("pancreas.RData not found")
  env <- new.env()
  load(path, envir = env)
  p <- env$pancreas  # the file's counts have 22 duplicated cell names
  expect_error(RunScviExt(p, method = "scvi", batch = "orig.ident", features = rownames(p)[1:50]),
               "Cell names are not unique.*make.unique")
})

test_that("install_scviext plans pip steps (offline: --no-index --find-links) without installing", {
  whl <- tempfile(fileext = ".whl"); file.create(whl)
  links <- tempfile(); dir.create(links)
  plan <- scviext:::.install_plan(wheel = whl, find_links = links)
  expect_length(plan, 2)
  expect_equal(plan[[1]]$packages, "torch==2.13.0")
  expect_match(plan[[2]]$packages, "\\.whl\\[r\\]$")
  expect_true("--no-index" %in% plan[[2]]$pip_options)
  expect_match(plan[[2]]$pip_options[2], "^--find-links=")
  expect_equal(scviext:::.install_plan()[[2]]$packages, "scvi-ext[r]")
  expect_error(scviext:::.install_plan(wheel = "missing.whl"), "does not exist")
  expect_error(use_scviext(), "give `python`")
})

test_that("install_scviext resolves the virtualenv and the base Python before running anything", {
  expect_equal(scviext:::.env_dir("/tmp/some/env"), "/tmp/some/env")
  expect_equal(basename(scviext:::.env_dir("r-scviext")), "r-scviext")
  expect_error(scviext:::.env_dir(""), "`envname` must be one non-empty string")
  expect_error(scviext:::.base_python("/no/such/python3"), "no Python found")
  expect_error(scviext:::.run_checked("false", character(), "a step"), "a step failed \\(exit status 1\\)")
  expect_error(install_scviext(tempfile(), wheel = "missing.whl"), "does not exist")
})
