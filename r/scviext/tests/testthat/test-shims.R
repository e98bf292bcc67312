# Pure-R: v4/v5 shims, the IntegrateLayers contract and DimReduc assembly.

test_that("the IntegrateLayers methods follow the Seurat 5 contract", {
  fns <- list(PIANOIntegration, SysVIIntegration, scCRAFTIntegration, UniPortIntegration, scBIOTIntegration,
              ScviExtIntegration)
  for (f in fns) {
    expect_identical(attr(f, "Seurat.method"), "integration")
    expect_true(all(c("object", "assay", "orig", "layers", "scale.layer", "features", "groups",
                      "new.reduction") %in% names(formals(f))))
  }
  env <- environment(SysVIIntegration)
  expect_identical(get("method", envir = env), "sysvi")
})

test_that("batches come from split layer names (Assay5) and groups are checked (Assay)", {
  g <- scviext:::.groups_from_layers(list(counts.CTRL = c("a", "b"), counts.STIM = "c"))
  expect_equal(g$group, c("CTRL", "CTRL", "STIM"))
  expect_equal(rownames(g), c("a", "b", "c"))
  expect_error(scviext:::.groups_from_layers(list(counts = c("a", "b"))), "split it first")
  expect_error(scviext:::.check_groups(NULL, c("a", "b")), "`groups` is required")
  gg <- scviext:::.check_groups(data.frame(b = c("x", "y"), row.names = c("b", "a")), c("a", "b"))
  expect_equal(gg$b, c("y", "x"))
  expect_error(scviext:::.check_groups(data.frame(b = "x", row.names = "a"), c("a", "b")), "lacks 1")
  v <- scviext:::.check_groups(c("x", "y"), c("a", "b"))
  expect_equal(rownames(v), c("a", "b"))
})

test_that("v4 Assay layers come out as dgCMatrix with the selected features", {
  obj <- pbmc_small_obj()
  m <- scviext:::.get_matrix(obj[["RNA"]], "counts", rownames(obj)[1:10], "RNA")
  expect_s4_class(m, "dgCMatrix")
  expect_equal(dim(m), c(10L, 80L))
  p <- scviext:::.matrix_payload(m)
  expect_equal(p$dims, c(10L, 80L))
  expect_type(p$x, "double")
  expect_equal(length(p$p), 81L)
})

test_that("Python's flat column-major embedding becomes a DimReduc with the cells as rownames", {
  cells <- c("c1", "c2", "c3")
  emb <- matrix(c(1, 2, 3, 4, 5, 6), nrow = 3)
  res <- list(embedding = as.list(as.numeric(emb)), dims = list(3L, 2L), cells = as.list(cells))
  e <- scviext:::.embedding_from_python(res, cells, "X_")
  expect_equal(unname(e), emb)
  expect_equal(rownames(e), cells)
  expect_error(scviext:::.embedding_from_python(res, rev(cells), "X_"), "another order")
  res$dims <- list(2L, 2L)
  expect_error(scviext:::.embedding_from_python(res, cells, "X_"), "inconsistent")
  dr <- scviext:::.make_dimreduc(e, "SYSVI", "RNA", list(method = "sysvi"))
  expect_s4_class(dr, "DimReduc")
  expect_equal(SeuratObject::Key(dr), "SYSVI_")
  expect_equal(colnames(SeuratObject::Embeddings(dr)), c("SYSVI_1", "SYSVI_2"))
  expect_equal(SeuratObject::Misc(dr)$method, "sysvi")
  expect_equal(scviext:::.default_key("integrated.sysvi"), "integratedsysvi_")
})

test_that("extra arguments for Python must be named; whole numbers become integers", {
  expect_error(scviext:::.dots_to_python(list(1)), "must be named")
  d <- scviext:::.dots_to_python(list(n_latent = 10, lr = 0.5))
  expect_identical(d$n_latent, 10L)
  expect_identical(d$lr, 0.5)
})
