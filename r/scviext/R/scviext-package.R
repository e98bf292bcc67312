#' scviext: Seurat interface to the scvi-ext integration suite
#'
#' The package sends a Seurat object's counts (a \code{dgCMatrix}'s \code{i}/\code{p}/\code{x} slots and
#' dimensions) and the needed meta.data columns to the Python package \code{scvi_ext} through
#' \pkg{reticulate}, and gets the embedding back as a flat numeric vector. No NumPy array crosses to R,
#' so reticulate builds that cannot convert NumPy 2 arrays (Debian's reticulate 1.28) work.
#'
#' @section Choosing the Python environment:
#' Set the environment variable \code{RETICULATE_PYTHON} to the interpreter that has \code{scvi_ext}
#' installed (for example \code{Sys.setenv(RETICULATE_PYTHON = "/path/to/.venv/bin/python")} before
#' the first call), or call \code{\link{use_scviext}}, or create one with \code{\link{install_scviext}}.
#'
#' @section Main functions:
#' \code{\link{RunScviExt}} (adds a DimReduc), the Seurat 5 \code{IntegrateLayers} methods
#' (\code{\link{PIANOIntegration}} and siblings), \code{\link{MapQueryScviExt}} (reference mapping with
#' label transfer).
#'
#' @importClassesFrom Matrix dgCMatrix
#' @keywords internal
"_PACKAGE"
