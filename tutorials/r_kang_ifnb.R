# %% [markdown]
# # Integrating the Kang IFN-beta PBMCs from Seurat with scvi-ext (R)
#
# A Seurat user integrates the Kang et al. (2018) control and interferon-beta stimulated PBMCs (1000 + 1000
# cells, harmony's `pbmc_stim.RData`) with an scvi-ext model through the `scviext` R package, and compares
# the UMAP before and after. Run from the repository root:
#
#     RETICULATE_PYTHON=$PWD/.venv/bin/python Rscript tutorials/r_kang_ifnb.R [method] [max_epochs]
#
# (install the R package first: `R CMD INSTALL r/scviext`). The figure goes to
# `out/tutorials/r_kang_ifnb_umap.png`.
#
# The default is sysVI with the condition as its "system" for 200 epochs: 3 min 42 s wall for the whole script
# (193 s of it training, 1 torch thread, shared 2-core box; `benchmarks/results/r/kang_tutorial.md`), with 0.322
# other-condition neighbours vs 0.054 for the PCA. Fewer epochs do not mix the conditions (30 epochs: 0.051).
# The Python core on the same cells and features (`scvi_ext.interop.integrate_anndata`, sysVI 200 epochs) gives
# 0.322 with this script's neighbour count too; with 2,000 scanpy HVGs instead of Seurat's it gave 0.388.
# Set OMP_NUM_THREADS=1 to keep torch on one thread (it takes all cores otherwise).

# %%
suppressPackageStartupMessages({
  library(Seurat)
  library(scviext)
})
args <- commandArgs(trailingOnly = TRUE)
method <- if (length(args) >= 1) args[1] else "sysvi"
max_epochs <- if (length(args) >= 2) as.integer(args[2]) else 200L
data_dir <- Sys.getenv("SCVIEXT_SHARED_DATA", "../shared/data")
out_dir <- file.path("out", "tutorials")
dir.create(out_dir, recursive = TRUE, showWarnings = FALSE)

# %% [markdown]
# ## Load the counts and build one Seurat object
# The file holds two genes x cells count matrices, `pbmc.ctrl` and `pbmc.stim`.

# %%
env <- new.env()
load(file.path(data_dir, "kang_ifnb_harmony_subset", "pbmc_stim.RData"), envir = env)
pbmc <- CreateSeuratObject(counts = cbind(env$pbmc.ctrl, env$pbmc.stim), project = "kang")
pbmc$stim <- c(rep("CTRL", ncol(env$pbmc.ctrl)), rep("STIM", ncol(env$pbmc.stim)))
pbmc <- NormalizeData(pbmc, verbose = FALSE)
pbmc <- FindVariableFeatures(pbmc, nfeatures = 2000, verbose = FALSE)
pbmc <- ScaleData(pbmc, verbose = FALSE)
pbmc <- RunPCA(pbmc, npcs = 30, verbose = FALSE)
pbmc <- RunUMAP(pbmc, reduction = "pca", dims = 1:30, reduction.name = "umap.unintegrated", verbose = FALSE)

# %% [markdown]
# ## Integrate with scvi-ext
# `RunScviExt` sends the raw counts of the variable features and the `stim` column to Python, trains the
# model and adds the embedding as a DimReduc. The call is recorded in `pbmc@commands`.

# %%
cfg <- scviext_config()
if (!method %in% c(cfg$methods, cfg$models)) {
  message(sprintf("'%s' is not available in this scvi_ext; using scvi instead", method))
  method <- "scvi"
}
t0 <- Sys.time()
pbmc <- RunScviExt(pbmc, method = method, batch = "stim", max_epochs = max_epochs, seed = 0, verbose = FALSE)
cat(sprintf("%s: %d cells x %d dims in %.1f s\n", method, ncol(pbmc), ncol(Embeddings(pbmc, method)),
            as.numeric(difftime(Sys.time(), t0, units = "secs"))))
ndims <- ncol(Embeddings(pbmc, method))
pbmc <- RunUMAP(pbmc, reduction = method, dims = seq_len(ndims), reduction.name = "umap.integrated",
                reduction.key = "UMAPint_", verbose = FALSE)

# %% [markdown]
# ## How mixed are the conditions?
# For each cell, the fraction of its 15 nearest neighbours from the other condition (0.5 = perfectly mixed
# when both conditions have the same size).

# %%
other_fraction <- function(emb, group, k = 15) {
  nn <- Seurat::FindNeighbors(emb, k.param = k, return.neighbor = TRUE, verbose = FALSE)
  idx <- Indices(nn)[, -1, drop = FALSE]
  mean(matrix(group[idx], nrow = nrow(idx)) != group)
}
mix_pca <- other_fraction(Embeddings(pbmc, "pca"), pbmc$stim)
mix_int <- other_fraction(Embeddings(pbmc, method), pbmc$stim)
cat(sprintf("neighbours from the other condition: PCA %.3f, %s %.3f\n", mix_pca, method, mix_int))

# %% [markdown]
# ## UMAP before and after

# %%
p1 <- DimPlot(pbmc, reduction = "umap.unintegrated", group.by = "stim") +
  ggplot2::ggtitle(sprintf("PCA (other-condition neighbours %.2f)", mix_pca))
p2 <- DimPlot(pbmc, reduction = "umap.integrated", group.by = "stim") +
  ggplot2::ggtitle(sprintf("%s (other-condition neighbours %.2f)", method, mix_int))
png_file <- file.path(out_dir, "r_kang_ifnb_umap.png")
ggplot2::ggsave(png_file, patchwork::wrap_plots(p1, p2), width = 11, height = 4.5, dpi = 100)
cat("wrote", png_file, "\n")
