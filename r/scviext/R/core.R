# The one core: checks (pure R, before any Python work), matrix extraction for v4/v5 assays, the call into
# Python with plain vectors, and DimReduc assembly.

#' Integration methods of scvi-ext
#'
#' @param baselines Also list the baselines (\code{"scvi"}, \code{"harmony"}, \code{"pca"}).
#' @return Character vector of method names. The five suite methods come first.
#' @examples
#' scviext_methods()
#' scviext_methods(baselines = TRUE)
#' @export
scviext_methods <- function(baselines = FALSE) {
  suite <- c("piano", "sysvi", "sccraft", "uniport", "scbiot")
  if (baselines) c(suite, "scvi", "harmony", "pca") else suite
}

# Methods that accept log-normalised data (layer = "data"); every other method models raw counts.
.data_methods <- c("pca", "harmony")

.check_method <- function(method) {
  if (!is.character(method) || length(method) < 1 || is.na(method[1])) {
    stop("`method` must be one method name: ", paste(scviext_methods(TRUE), collapse = ", "), call. = FALSE)
  }
  method <- tolower(method[1])
  if (!method %in% scviext_methods(TRUE)) {
    stop(sprintf("Unknown method '%s'. Choose one of: %s.", method,
                 paste(scviext_methods(TRUE), collapse = ", ")), call. = FALSE)
  }
  method
}

.check_layer <- function(layer, method) {
  if (!is.character(layer) || length(layer) != 1 || !layer %in% c("counts", "data")) {
    stop("`layer` must be \"counts\" or \"data\".", call. = FALSE)
  }
  if (layer == "data" && !method %in% .data_methods) {
    stop(sprintf(paste0("Method '%s' models raw counts: use layer = \"counts\" ",
                        "(layer = \"data\" is only for %s)."), method, paste(.data_methods, collapse = ", ")),
         call. = FALSE)
  }
  layer
}

.check_scalar <- function(x, name, null_ok = TRUE, positive = FALSE) {
  if (is.null(x)) {
    if (null_ok) return(NULL)
    stop(sprintf("`%s` must not be NULL.", name), call. = FALSE)
  }
  if (!is.numeric(x) || length(x) != 1 || is.na(x) || x != round(x) || (positive && x < 1)) {
    stop(sprintf("`%s` must be a single whole number%s.", name, if (positive) " >= 1" else ""), call. = FALSE)
  }
  as.integer(x)
}

# meta.data columns -> named list of plain vectors (character or numeric), with readable errors.
.meta_columns <- function(meta, batch, covariates = NULL, labels = NULL, min_batches = 2L) {
  cols <- c(batch = batch, labels = labels)
  if (length(covariates)) cols <- c(cols, stats::setNames(as.character(covariates), rep("covariates", length(covariates))))
  out <- list()
  for (i in seq_along(cols)) {
    col <- cols[[i]]
    arg <- names(cols)[i]
    if (!is.character(col) || length(col) != 1) stop(sprintf("`%s` must be column names.", arg), call. = FALSE)
    if (!col %in% colnames(meta)) {
      shown <- paste(utils::head(colnames(meta), 20), collapse = ", ")
      stop(sprintf("`%s` = '%s' is not a meta.data column (columns: %s).", arg, col, shown), call. = FALSE)
    }
    v <- meta[[col]]
    if (anyNA(v)) {
      stop(sprintf("meta.data column '%s' (`%s`) has %d missing values; fill them first.", col, arg,
                   sum(is.na(v))), call. = FALSE)
    }
    out[[col]] <- if (is.numeric(v) && arg != "batch" && arg != "labels") as.numeric(v) else as.character(v)
  }
  if (!is.null(batch) && min_batches > 1) {
    n <- length(unique(out[[batch]]))
    if (n < min_batches) {
      stop(sprintf("`batch` = '%s' has %d distinct value(s); integration needs at least %d batches.",
                   batch, n, min_batches), call. = FALSE)
    }
  }
  out
}

# Get a layer of a v4 Assay or a v5 Assay5 as a dgCMatrix (genes x cells), or NULL when it is empty.
.assay_layer <- function(assay, layer) {
  m <- if (methods::is(assay, "Assay5")) {
    layer_data <- getExportedValue("SeuratObject", "LayerData")
    join <- getExportedValue("SeuratObject", "JoinLayers")
    tryCatch(layer_data(join(assay, layers = layer), layer = layer), error = function(e) NULL)
  } else if (methods::is(assay, "Assay")) {
    # positional: the 2nd argument is `slot` in SeuratObject 4 and `layer` in 5, where `slot =` is deprecated
    # (an error from 5.3 on, which tryCatch would turn into a misleading "no counts")
    tryCatch(SeuratObject::GetAssayData(assay, layer), error = function(e) NULL)
  } else {
    stop(sprintf("Expected a Seurat Assay or Assay5, got an object of class '%s'.", class(assay)[1]),
         call. = FALSE)
  }
  if (is.null(m) || length(m) == 0 || nrow(m) == 0 || ncol(m) == 0) return(NULL)
  if (!methods::is(m, "dgCMatrix")) m <- methods::as(methods::as(m, "CsparseMatrix"), "dgCMatrix")
  m
}

# Features x cells matrix of the assay's `layer`, checked: present, features known, counts integer.
.get_matrix <- function(assay, layer, features, assay_name = "the assay") {
  m <- .assay_layer(assay, layer)
  if (is.null(m) || length(m@x) == 0) {
    hint <- if (layer == "counts") {
      "Add raw counts (CreateSeuratObject(counts = ...)) or use layer = \"data\" with method \"harmony\" or \"pca\"."
    } else {
      "Run Seurat::NormalizeData() first."
    }
    stop(sprintf("Assay '%s' has no '%s' (the layer/slot is empty). %s", assay_name, layer, hint), call. = FALSE)
  }
  if (is.null(features) || length(features) == 0) {
    stop(paste0("No features selected: the assay has no variable features. Run Seurat::FindVariableFeatures() ",
                "or pass `features =` (for example rownames(object))."), call. = FALSE)
  }
  missing <- setdiff(features, rownames(m))
  if (length(missing) > 0) {
    stop(sprintf("%d of the %d `features` are not in assay '%s' (e.g. %s).", length(missing), length(features),
                 assay_name, paste(utils::head(missing, 5), collapse = ", ")), call. = FALSE)
  }
  m <- m[features, , drop = FALSE]
  if (anyNA(m@x) || any(!is.finite(m@x))) {
    stop(sprintf("Layer '%s' of assay '%s' has NaN or infinite values.", layer, assay_name), call. = FALSE)
  }
  if (layer == "counts" && (any(m@x < 0) || any(m@x != round(m@x)))) {
    stop(sprintf(paste0("Layer 'counts' of assay '%s' holds non-integer or negative values; the models need ",
                        "raw UMI counts."), assay_name), call. = FALSE)
  }
  if (anyDuplicated(colnames(m))) {
    stop(sprintf(paste0("Cell names are not unique in assay '%s'; make them unique first, e.g. ",
                        "counts <- GetAssayData(object[[\"%s\"]], \"counts\"); ",
                        "colnames(counts) <- make.unique(colnames(counts)); meta <- object[[]]; ",
                        "rownames(meta) <- colnames(counts); ",
                        "object <- CreateSeuratObject(counts = counts, meta.data = meta) (Seurat 4 only: ",
                        "RenameCells(object, new.names = make.unique(colnames(object))))."),
                 assay_name, if (identical(assay_name, "the assay")) "RNA" else assay_name), call. = FALSE)
  }
  m
}

# What crosses to Python: the dgCMatrix slots as plain vectors.
.matrix_payload <- function(m) {
  list(i = m@i, p = m@p, x = as.numeric(m@x), dims = dim(m),
       genes = as.character(rownames(m)), cells = as.character(colnames(m)))
}

# Flat column-major numeric + dims from Python -> matrix with the cells as rownames (checked).
.embedding_from_python <- function(res, cells, key) {
  dims <- as.integer(unlist(res$dims))
  x <- as.numeric(unlist(res$embedding))
  if (length(dims) != 2 || length(x) != prod(dims)) {
    stop("scvi_ext returned an embedding of inconsistent size.", call. = FALSE)
  }
  emb <- matrix(x, nrow = dims[1], ncol = dims[2])
  back <- as.character(unlist(res$cells))
  if (!identical(back, as.character(cells))) {
    stop("scvi_ext returned the cells in another order or with other names.", call. = FALSE)
  }
  dimnames(emb) <- list(cells, paste0(key, seq_len(ncol(emb))))
  emb
}

.default_key <- function(name) {
  key <- gsub("[^A-Za-z0-9]", "", name)
  if (!nzchar(key)) key <- "scviext"
  paste0(key, "_")
}

# DimReduc assembly (rownames = cells, colnames = key + index), with the run recorded in misc.
.make_dimreduc <- function(emb, key, assay, misc = list()) {
  if (!grepl("_$", key)) key <- paste0(key, "_")
  colnames(emb) <- paste0(key, seq_len(ncol(emb)))
  SeuratObject::CreateDimReducObject(embeddings = emb, key = key, assay = assay, misc = misc)
}

# The single entry point into Python for integration. Returns the embedding (cells x dims) and info.
.scviext_integrate <- function(m, meta_cols, method, batch, covariates = NULL, labels = NULL, layer = "counts",
                               max_epochs = NULL, seed = 0L, n_threads = NULL, accelerator = "auto",
                               model_dir = NULL, verbose = TRUE, key = "scviext_", method_kwargs = list()) {
  cfg <- scviext_config()
  if (!method %in% c(cfg$methods, cfg$models)) {
    stop(sprintf(paste0("Method '%s' is not available in the installed scvi_ext (available: %s); ",
                        "its model has not landed yet or the environment is outdated."), method,
                 paste(union(cfg$methods, cfg$models), collapse = ", ")), call. = FALSE)
  }
  if ((!is.null(model_dir) || length(covariates) > 0) && !method %in% cfg$models) {
    stop(sprintf(paste0("Method '%s' has no trainable scvi-tools model in the installed scvi_ext ",
                        "(models: %s): `model_dir` and `covariates` need one."), method,
                 paste(cfg$models, collapse = ", ")), call. = FALSE)
  }
  if (!is.null(model_dir)) {
    dir.create(model_dir, recursive = TRUE, showWarnings = FALSE)
    model_dir <- normalizePath(model_dir)
  }
  res <- .scviext_call(
    "integrate_from_r", .matrix_payload(m), meta_cols, method, batch,
    covariates = if (length(covariates)) as.list(covariates) else NULL, layer = layer,
    max_epochs = max_epochs, seed = seed, n_threads = n_threads, accelerator = accelerator,
    progress_bar = verbose, model_dir = model_dir, labels_key = labels, method_kwargs = method_kwargs
  )
  list(embedding = .embedding_from_python(res, colnames(m), key), info = res$info)
}
