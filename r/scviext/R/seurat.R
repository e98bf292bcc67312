.dots_to_python <- function(dots) {
  if (length(dots) && (is.null(names(dots)) || any(!nzchar(names(dots))))) {
    stop("Extra arguments (...) for the Python method must be named.", call. = FALSE)
  }
  lapply(dots, function(v) {
    if (is.numeric(v) && length(v) == 1 && !is.na(v) && v == round(v) && abs(v) < .Machine$integer.max) {
      as.integer(v)
    } else {
      v
    }
  })
}

.check_seurat <- function(object, argument = "object") {
  if (!methods::is(object, "Seurat")) {
    stop(sprintf("`%s` must be a Seurat object, not '%s'.", argument, class(object)[1]), call. = FALSE)
  }
}

#' Integrate a Seurat object with an scvi-ext method
#'
#' Sends the selected features of one assay layer (raw counts by default) and the batch/covariate columns
#' of \code{meta.data} to the Python package \code{scvi_ext}, runs the method, and stores the embedding as a
#' \code{DimReduc}. Argument checks (method, columns, counts, features) run in R before any Python work.
#'
#' Without \code{model_dir} and \code{covariates} the method runs through scvi-ext's registry with the
#' same preprocessing as its command line (normalise, log1p, PCA of the selected features). With either, the
#' method's scvi-tools model is trained on the counts; \code{model_dir} saves it (plus the reference
#' embedding and \code{labels} for \code{\link{MapQueryScviExt}}).
#'
#' @param object A Seurat object.
#' @param method One of \code{\link{scviext_methods}(baselines = TRUE)}; the five suite methods first.
#' @param batch meta.data column with the batches (at least two).
#' @param covariates Extra meta.data columns (numeric: continuous; otherwise categorical); needs a model.
#' @param assay Assay to read.
#' @param features Features to use (default: the assay's variable features).
#' @param layer \code{"counts"} (raw counts) or \code{"data"} (log-normalised; Harmony and PCA only).
#' @param slot Seurat 4 name for \code{layer}; when given it wins.
#' @param reduction.name Name of the new reduction (default: the method name).
#' @param reduction.key Key of the new reduction (default from \code{reduction.name}).
#' @param max_epochs Training epochs (\code{NULL}: the method's default).
#' @param seed Random seed passed to Python.
#' @param n_threads Torch CPU threads (\code{NULL}: leave as is).
#' @param accelerator Lightning accelerator: \code{"auto"}, \code{"cpu"} or \code{"gpu"}.
#' @param model_dir Folder to save the trained Python model to (\code{NULL}: do not save).
#' @param labels meta.data column with cell types saved with the model for label transfer.
#' @param verbose Show training progress.
#' @param ... Named arguments for the Python method or model class (for example \code{n_latent = 10}).
#' @return \code{object} with the new reduction; the call is recorded in \code{object@commands} and the
#'   Python-side details in \code{Misc(object[[reduction.name]])}.
#' @examples
#' \dontrun{
#' obj <- RunScviExt(obj, method = "sysvi", batch = "orig.ident", max_epochs = 50)
#' Seurat::DimPlot(Seurat::RunUMAP(obj, reduction = "sysvi", dims = 1:10), group.by = "orig.ident")
#' }
#' @export
RunScviExt <- function(object, method = c("piano", "sysvi", "sccraft", "uniport", "scbiot", "scvi", "harmony",
                                          "pca"),
                       batch = "orig.ident", covariates = NULL, assay = SeuratObject::DefaultAssay(object),
                       features = NULL, layer = "counts", slot = NULL, reduction.name = NULL,
                       reduction.key = NULL, max_epochs = NULL, seed = 0L, n_threads = NULL,
                       accelerator = "auto", model_dir = NULL, labels = NULL, verbose = TRUE, ...) {
  .check_seurat(object)
  method <- .check_method(method)
  if (!is.null(slot)) layer <- slot
  layer <- .check_layer(layer, method)
  max_epochs <- .check_scalar(max_epochs, "max_epochs", positive = TRUE)
  seed <- .check_scalar(seed, "seed", null_ok = FALSE)
  n_threads <- .check_scalar(n_threads, "n_threads", positive = TRUE)
  if (!assay %in% SeuratObject::Assays(object)) {
    stop(sprintf("`assay` = '%s' is not in the object (assays: %s).", assay,
                 paste(SeuratObject::Assays(object), collapse = ", ")), call. = FALSE)
  }
  if (is.null(features)) features <- SeuratObject::VariableFeatures(object[[assay]])
  reduction.name <- reduction.name %||% method
  reduction.key <- reduction.key %||% .default_key(reduction.name)
  meta_cols <- .meta_columns(object[[]], batch, covariates, labels)
  m <- .get_matrix(object[[assay]], layer, features, assay)
  meta_cols <- lapply(meta_cols, function(v) v[match(colnames(m), colnames(object))])
  out <- .scviext_integrate(m, meta_cols, method, batch, covariates = covariates, labels = labels, layer = layer,
                            max_epochs = max_epochs, seed = seed, n_threads = n_threads,
                            accelerator = accelerator, model_dir = model_dir, verbose = verbose,
                            key = reduction.key, method_kwargs = .dots_to_python(list(...)))
  misc <- list(method = method, batch = batch, covariates = covariates, layer = layer, seed = seed,
               max_epochs = max_epochs, model_dir = model_dir, features = features, python = out$info)
  object[[reduction.name]] <- .make_dimreduc(out$embedding, reduction.key, assay, misc)
  object <- SeuratObject::LogSeuratCommand(object = object)
  object
}

#' Map query cells onto a saved scvi-ext reference model
#'
#' Extends the reference model saved by \code{RunScviExt(..., model_dir = )} with the query's batches
#' (scArches), trains it briefly with the reference weights frozen, and adds the query embedding as a
#' \code{DimReduc}. When the reference was saved with \code{labels}, each query cell gets the majority label
#' of its 15 nearest reference cells in the shared space and the fraction of them that agree.
#'
#' @param query A Seurat object with raw counts.
#' @param model_dir Folder written by \code{RunScviExt(..., model_dir = )}.
#' @param batch meta.data column of the query with its batches (\code{NULL}: one new batch).
#' @param assay Assay with the counts.
#' @param reduction.name Name of the new reduction (default: \code{"ref.<method>"}).
#' @param reduction.key Key of the new reduction.
#' @param max_epochs Query training epochs (\code{NULL}: the model's default).
#' @param seed Random seed.
#' @param n_threads Torch CPU threads.
#' @param accelerator Lightning accelerator.
#' @param prefix meta.data prefix of the transferred labels: columns \code{<prefix>.<labels>} and
#'   \code{<prefix>.<labels>.score}.
#' @param verbose Show training progress.
#' @return \code{query} with the reduction and, when the reference has labels, the predicted labels and
#'   their confidence in meta.data.
#' @examples
#' \dontrun{
#' ref <- RunScviExt(ref, method = "scvi", model_dir = "models/ref", labels = "cell_type")
#' query <- MapQueryScviExt(query, "models/ref", max_epochs = 20)
#' table(query$predicted.cell_type)
#' }
#' @export
MapQueryScviExt <- function(query, model_dir, batch = NULL, assay = SeuratObject::DefaultAssay(query),
                            reduction.name = NULL, reduction.key = NULL, max_epochs = NULL, seed = 0L,
                            n_threads = NULL, accelerator = "auto", prefix = "predicted", verbose = TRUE) {
  .check_seurat(query, "query")
  if (!is.character(model_dir) || length(model_dir) != 1 || !dir.exists(model_dir)) {
    stop("`model_dir` must be a folder written by RunScviExt(..., model_dir = ).", call. = FALSE)
  }
  if (!file.exists(file.path(model_dir, "scviext_r.json"))) {
    stop(sprintf("`model_dir` = '%s' has no scviext_r.json: save a model with RunScviExt(..., model_dir = ).",
                 model_dir), call. = FALSE)
  }
  max_epochs <- .check_scalar(max_epochs, "max_epochs", positive = TRUE)
  seed <- .check_scalar(seed, "seed", null_ok = FALSE)
  n_threads <- .check_scalar(n_threads, "n_threads", positive = TRUE)
  if (!assay %in% SeuratObject::Assays(query)) {
    stop(sprintf("`assay` = '%s' is not in the query.", assay), call. = FALSE)
  }
  meta_cols <- if (is.null(batch)) list() else .meta_columns(query[[]], batch, min_batches = 1L)
  info <- .scviext_call("read_model_info", normalizePath(model_dir))
  features <- intersect(as.character(unlist(info$features)), rownames(query[[assay]]))
  if (length(features) == 0) {
    stop("The query shares none of the reference model's features; check the gene names.", call. = FALSE)
  }
  for (cov in c(unlist(info$categorical_covariates), unlist(info$continuous_covariates))) {
    meta_cols <- c(meta_cols, .meta_columns(query[[]], NULL, covariates = cov, min_batches = 1L))
  }
  m <- .get_matrix(query[[assay]], "counts", features, assay)
  reduction.name <- reduction.name %||% paste0("ref.", info$method)
  reduction.key <- reduction.key %||% .default_key(reduction.name)
  res <- .scviext_call("map_query_from_r", .matrix_payload(m), meta_cols, normalizePath(model_dir),
                       batch_key = batch, max_epochs = max_epochs, seed = seed, n_threads = n_threads,
                       accelerator = accelerator, progress_bar = verbose)
  emb <- .embedding_from_python(res, colnames(m), reduction.key)
  misc <- list(method = info$method, model_dir = normalizePath(model_dir), batch = batch, seed = seed,
               max_epochs = max_epochs, n_features = length(features))
  query[[reduction.name]] <- .make_dimreduc(emb, reduction.key, assay, misc)
  labels <- as.character(unlist(res$labels))
  if (length(labels) > 0) {
    col <- paste(prefix, info$labels_key, sep = ".")
    query[[col]] <- stats::setNames(labels, colnames(m))
    query[[paste0(col, ".score")]] <- stats::setNames(as.numeric(unlist(res$confidence)), colnames(m))
  }
  query <- SeuratObject::LogSeuratCommand(object = query)
  query
}

`%||%` <- function(a, b) if (is.null(a)) b else a
