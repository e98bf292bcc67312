# Every suite model, 1-2 epochs, on pbmc_small and on real Seurat objects. A model that has not landed in
# scvi_ext skips with its name (such skips are not passes).

for (method in scviext_methods()) {
  local({
    m <- method
    test_that(sprintf("%s: the IntegrateLayers method on pbmc_small's v4 Assay", m), {
      skip_if_method_missing(m)
      obj <- pbmc_small_obj()
      fn <- get(switch(m, piano = "PIANOIntegration", sysvi = "SysVIIntegration",
                       sccraft = "scCRAFTIntegration", uniport = "UniPortIntegration",
                       scbiot = "scBIOTIntegration"))
      res <- fn(obj[["RNA"]], groups = obj[["groups"]], features = rownames(obj), max_epochs = 1,
                verbose = FALSE)
      expect_named(res, paste0("integrated.", m))
      expect_equal(rownames(SeuratObject::Embeddings(res[[1]])), colnames(obj))
      expect_true(all(is.finite(SeuratObject::Embeddings(res[[1]]))))
    })

    test_that(sprintf("%s: pancreas reference saved, held-out cells mapped with label transfer", m), {
      skip_if_method_missing(m)
      if (!scviext_available(m, model = TRUE)) skip(sprintf("model '%s' has no saveable model class yet", m))
      p <- load_pancreas(nfeatures = 500)
      held_out <- seq_len(ncol(p)) %% 4 == 0  # a quarter of the cells, from the reference's own batches
      ref <- p[, !held_out]
      query <- p[, held_out]
      dir <- file.path(tempdir(), paste0("ref_", m))
      ref <- RunScviExt(ref, method = m, batch = "orig.ident", max_epochs = 2, model_dir = dir,
                        labels = "Group", n_threads = 1, verbose = FALSE)
      expect_equal(nrow(SeuratObject::Embeddings(ref, m)), ncol(ref))
      q <- MapQueryScviExt(query, dir, batch = "orig.ident", max_epochs = 1, n_threads = 1, verbose = FALSE)
      qe <- SeuratObject::Embeddings(q, paste0("ref.", m))
      expect_equal(dim(qe), c(ncol(query), ncol(SeuratObject::Embeddings(ref, m))))
      expect_true(all(is.finite(qe)))
      expect_true(all(q$predicted.Group %in% as.character(ref$Group)))
      expect_true(all(q$predicted.Group.score > 0 & q$predicted.Group.score <= 1))
    })

    test_that(sprintf("%s: Kang IFN-beta ctrl/stim (pbmc_stim.RData) integrates", m), {
      skip_if_method_missing(m)
      obj <- load_pbmc_stim(n_per_condition = 150, nfeatures = 500)
      out <- RunScviExt(obj, method = m, batch = "stim", max_epochs = 1, n_threads = 1, verbose = FALSE)
      emb <- SeuratObject::Embeddings(out, m)
      expect_equal(rownames(emb), colnames(obj))
      expect_true(all(is.finite(emb)))
    })
  })
}
