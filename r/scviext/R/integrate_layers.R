# Seurat 5 IntegrateLayers() methods. IntegrateLayers calls
#   method(object = <Assay5>, assay = , orig = <DimReduc>, layers = , scale.layer = , features = , groups = , ...)
# and expects a named list of DimReduc objects. The same functions accept a Seurat 4 Assay with a groups
# data.frame (rownames = cells, first column = batch).

# Batch of each cell from the names of split layers ("counts.ctrl" -> "ctrl"), for Assay5 without groups.
.groups_from_layers <- function(cells_by_layer) {
  if (length(cells_by_layer) < 2) {
    stop("The assay has one layer: split it first (object[[\"RNA\"]] <- split(object[[\"RNA\"]], f = object$batch)) ",
         "or pass `groups`.", call. = FALSE)
  }
  batch <- sub("^[^.]+\\.", "", names(cells_by_layer))
  cells <- unlist(cells_by_layer, use.names = FALSE)
  data.frame(group = rep(batch, lengths(cells_by_layer)), row.names = cells, stringsAsFactors = FALSE)
}

.layer_cells <- function(assay, layers) {
  cells_fn <- getExportedValue("SeuratObject", "Cells")
  layers_fn <- getExportedValue("SeuratObject", "Layers")
  found <- layers_fn(assay, search = layers)
  stats::setNames(lapply(found, function(l) cells_fn(assay, layer = l)), found)
}

.check_groups <- function(groups, cells) {
  if (is.null(groups)) {
    stop("`groups` is required for a Seurat 4 Assay: a data.frame with the cells as rownames and the batch ",
         "in its first column.", call. = FALSE)
  }
  if (is.factor(groups) || is.character(groups)) {
    if (is.null(names(groups))) {
      if (length(groups) != length(cells)) stop("`groups` must have one value per cell.", call. = FALSE)
      names(groups) <- cells
    }
    groups <- data.frame(group = as.character(groups), row.names = names(groups), stringsAsFactors = FALSE)
  }
  if (!is.data.frame(groups) || ncol(groups) < 1) {
    stop("`groups` must be a data.frame with the batch in its first column.", call. = FALSE)
  }
  missing <- setdiff(cells, rownames(groups))
  if (length(missing) > 0) {
    stop(sprintf("`groups` lacks %d of the assay's cells (e.g. %s).", length(missing),
                 paste(utils::head(missing, 3), collapse = ", ")), call. = FALSE)
  }
  groups[cells, , drop = FALSE]
}

#' Seurat 5 IntegrateLayers method for any scvi-ext method
#'
#' Implements the \code{IntegrateLayers} method contract of Seurat 5 (signature, \code{Seurat.method}
#' attribute, a named list of \code{DimReduc} as result). The method-specific wrappers
#' \code{\link{PIANOIntegration}}, \code{\link{SysVIIntegration}}, \code{\link{scCRAFTIntegration}},
#' \code{\link{UniPortIntegration}} and \code{\link{scBIOTIntegration}} call it. It also works on a
#' Seurat 4 \code{Assay} when \code{groups} gives the batch of each cell.
#'
#' @param object An \code{Assay5} (split by batch, or with \code{groups}) or a Seurat 4 \code{Assay}.
#' @param assay Name of the assay (recorded in the DimReduc).
#' @param orig Original reduction (unused: the methods start from counts; accepted for the contract).
#' @param layers Layers IntegrateLayers selected (used to find the batches of an unsplit call).
#' @param scale.layer Unused; accepted for the contract.
#' @param features Features to use (default: the assay's variable features).
#' @param groups data.frame with cells as rownames and the batch in its first column.
#' @param new.reduction Name of the reduction in the result.
#' @param reduction.key Key of the reduction (default from \code{new.reduction}).
#' @param method scvi-ext method name.
#' @param layer \code{"counts"} or \code{"data"}.
#' @param max_epochs,seed,n_threads,accelerator,model_dir,verbose As in \code{\link{RunScviExt}}.
#' @param ... Named arguments for the Python method.
#' @return A named list with one \code{DimReduc}, named \code{new.reduction}.
#' @examples
#' \dontrun{
#' obj[["RNA"]] <- split(obj[["RNA"]], f = obj$stim)
#' obj <- Seurat::IntegrateLayers(obj, method = SysVIIntegration, new.reduction = "integrated.sysvi")
#' }
#' @export
ScviExtIntegration <- function(object, assay = NULL, orig = NULL, layers = NULL, scale.layer = NULL,
                               features = NULL, groups = NULL, new.reduction = NULL, reduction.key = NULL,
                               method = "scvi", layer = "counts", max_epochs = NULL, seed = 0L,
                               n_threads = NULL, accelerator = "auto", model_dir = NULL, verbose = TRUE, ...) {
  method <- .check_method(method)
  layer <- .check_layer(layer, method)
  max_epochs <- .check_scalar(max_epochs, "max_epochs", positive = TRUE)
  seed <- .check_scalar(seed, "seed", null_ok = FALSE)
  n_threads <- .check_scalar(n_threads, "n_threads", positive = TRUE)
  if (!methods::is(object, "Assay5") && !methods::is(object, "Assay")) {
    stop(sprintf("`object` must be an Assay5 or Assay (IntegrateLayers passes object[[assay]]), not '%s'.",
                 class(object)[1]), call. = FALSE)
  }
  if (is.null(features) || length(features) == 0) features <- SeuratObject::VariableFeatures(object)
  m <- .get_matrix(object, layer, features, assay %||% "the assay")
  if (is.null(groups) && methods::is(object, "Assay5")) {
    groups <- .groups_from_layers(.layer_cells(object, layer))
  }
  groups <- .check_groups(groups, colnames(m))
  batch <- colnames(groups)[1]
  meta_cols <- .meta_columns(groups, batch)
  new.reduction <- new.reduction %||% paste0("integrated.", method)
  reduction.key <- reduction.key %||% .default_key(new.reduction)
  out <- .scviext_integrate(m, meta_cols, method, batch, layer = layer, max_epochs = max_epochs, seed = seed,
                            n_threads = n_threads, accelerator = accelerator, model_dir = model_dir,
                            verbose = verbose, key = reduction.key, method_kwargs = .dots_to_python(list(...)))
  misc <- list(method = method, layer = layer, seed = seed, max_epochs = max_epochs, python = out$info)
  result <- list(.make_dimreduc(out$embedding, reduction.key, assay %||% "RNA", misc))
  names(result) <- new.reduction
  result
}
attr(ScviExtIntegration, "Seurat.method") <- "integration"

.make_integration <- function(method) {
  force(method)
  f <- function(object, assay = NULL, orig = NULL, layers = NULL, scale.layer = NULL, features = NULL,
                groups = NULL, new.reduction = NULL, reduction.key = NULL, layer = "counts", max_epochs = NULL,
                seed = 0L, n_threads = NULL, accelerator = "auto", model_dir = NULL, verbose = TRUE, ...) {
    ScviExtIntegration(object = object, assay = assay, orig = orig, layers = layers, scale.layer = scale.layer,
                       features = features, groups = groups,
                       new.reduction = new.reduction %||% paste0("integrated.", method),
                       reduction.key = reduction.key, method = method, layer = layer, max_epochs = max_epochs,
                       seed = seed, n_threads = n_threads, accelerator = accelerator, model_dir = model_dir,
                       verbose = verbose, ...)
  }
  attr(f, "Seurat.method") <- "integration"
  f
}

#' Seurat 5 IntegrateLayers methods for the scvi-ext suite
#'
#' One function per method, each a \code{\link{ScviExtIntegration}} with \code{method} fixed; pass them to
#' \code{Seurat::IntegrateLayers(object, method = SysVIIntegration, ...)}. They also accept a Seurat 4
#' \code{Assay} with \code{groups}.
#'
#' @inheritParams ScviExtIntegration
#' @return A named list with one \code{DimReduc} (default name \code{"integrated.<method>"}).
#' @examples
#' \dontrun{
#' obj <- Seurat::IntegrateLayers(obj, method = PIANOIntegration, max_epochs = 50)
#' res <- SysVIIntegration(pbmc[["RNA"]], groups = pbmc[["stim"]], max_epochs = 2)
#' }
#' @name suite-integration
NULL

#' @rdname suite-integration
#' @export
PIANOIntegration <- .make_integration("piano")

#' @rdname suite-integration
#' @export
SysVIIntegration <- .make_integration("sysvi")

#' @rdname suite-integration
#' @export
scCRAFTIntegration <- .make_integration("sccraft")

#' @rdname suite-integration
#' @export
UniPortIntegration <- .make_integration("uniport")

#' @rdname suite-integration
#' @export
scBIOTIntegration <- .make_integration("scbiot")
