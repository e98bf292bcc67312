library(scviext)
py <- install_scviext(envname = "/tmp/rsv_offline", wheel = Sys.glob("/tmp/wh/scvi_ext-*.whl"), find_links = "/tmp/wh")
cat("python:", py, "\n")
use_scviext(python = py)
cfg <- scviext_config()
cat("scvi_ext", cfg$scvi_ext, "| models:", paste(cfg$models, collapse = ","), "\n")
obj <- SeuratObject::pbmc_small
obj <- RunScviExt(obj, method = "piano", batch = "groups", features = rownames(obj), max_epochs = 2L, seed = 0)
print(dim(SeuratObject::Embeddings(obj, "piano")))
