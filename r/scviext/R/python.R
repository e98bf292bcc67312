# Everything that touches reticulate lives in this file and in .scviext_call().

.scviext_env <- new.env(parent = emptyenv())

#' Use a Python environment that has scvi_ext
#'
#' Points \pkg{reticulate} at a Python interpreter (or a virtualenv made by \code{\link{install_scviext}})
#' and checks that it can import \code{scvi_ext}. Call it before any other function of the package, or set
#' \code{RETICULATE_PYTHON} instead. Once reticulate has started Python in an R session it cannot switch
#' to another interpreter.
#'
#' @param python Path to a Python executable (for example \code{".venv/bin/python"}).
#' @param envname Name or path of a virtualenv (used when \code{python} is \code{NULL}).
#' @return Invisibly, the configuration list of \code{\link{scviext_config}}.
#' @examples
#' \dontrun{
#' use_scviext(python = "/opt/scvi-ext/.venv/bin/python")
#' }
#' @export
use_scviext <- function(python = NULL, envname = NULL) {
  if (is.null(python) && is.null(envname)) {
    stop("use_scviext(): give `python` (an interpreter path) or `envname` (a virtualenv).", call. = FALSE)
  }
  if (!is.null(python)) {
    if (!file.exists(python)) stop(sprintf("use_scviext(): python '%s' does not exist.", python), call. = FALSE)
    reticulate::use_python(python, required = TRUE)
  } else {
    reticulate::use_virtualenv(envname, required = TRUE)
  }
  invisible(scviext_config())
}

#' Describe the Python side
#'
#' @return A list: the Python executable, and (when \code{scvi_ext} imports) its version, the versions of
#'   scvi-tools and NumPy, the registered methods and the methods with a trainable model, and
#'   \code{torch_load}: how torch was loaded (see the section below).
#' @section torch and R's BLAS:
#' On Linux, R built against a shared BLAS (Debian and Ubuntu's \code{r-base}: \code{libblas.so.3}) puts
#' that library's \code{sgemm_}, \code{dgemm_}, ... in the process's global symbol scope. torch loaded
#' afterwards binds its own BLAS calls to them instead of its bundled MKL, and every matrix product runs
#' through R's BLAS (the reference BLAS: about 17 times slower per product, 6 times slower sysVI
#' training, measured here). So the package imports torch with \code{RTLD_DEEPBIND} the first time it starts
#' Python, and torch then uses its own MKL as in a plain Python session. \code{torch_load} says what
#' happened: \code{"deepbind"}; \code{"imported before scviext"} (torch was already imported in this
#' R session, e.g. by other reticulate code: restart R and load scviext first); \code{"platform default"}
#' (no \code{RTLD_DEEPBIND}, e.g. macOS, where two-level namespaces avoid the problem);
#' \code{"disabled"} (\code{options(scviext.torch_deepbind = FALSE)} was set before the first call);
#' \code{"torch not importable"}. The thread count (\code{n_threads}) is unaffected.
#' @examples
#' \dontrun{
#' scviext_config()$methods
#' }
#' @export
scviext_config <- function() {
  interop <- .scviext_py()
  info <- interop$environment_info()
  info$python <- reticulate::py_config()$python
  info$methods <- as.character(unlist(info$methods))
  info$models <- as.character(unlist(info$models))
  info$torch_load <- .scviext_env$torch_load
  info
}

#' Is a method available in the Python environment?
#'
#' @param method Method name (see \code{\link{scviext_methods}}).
#' @param model Require a trainable model class (needed for \code{model_dir}, covariates and query mapping).
#' @return \code{TRUE} or \code{FALSE}; never an error.
#' @examples
#' \dontrun{
#' scviext_available("sysvi")
#' }
#' @export
scviext_available <- function(method, model = FALSE) {
  cfg <- tryCatch(scviext_config(), error = function(e) NULL)
  if (is.null(cfg)) return(FALSE)
  if (model) method %in% cfg$models else method %in% cfg$methods
}

.scviext_missing_python_message <- function(python) {
  sprintf(paste0(
    "The Python environment reticulate uses (%s) cannot import 'scvi_ext'. ",
    "Install it with scviext::install_scviext() and call scviext::use_scviext(envname = \"r-scviext\"), ",
    "or point RETICULATE_PYTHON at an interpreter that has it (for example the project's .venv/bin/python) ",
    "before loading scviext."), python)
}

# Import scvi_ext.interop once per session, with an actionable error when it is missing.
.scviext_py <- function() {
  if (!is.null(.scviext_env$interop)) return(.scviext_env$interop)
  python <- tryCatch(reticulate::py_discover_config()$python, error = function(e) "none found")
  ok <- tryCatch(reticulate::py_module_available("scvi_ext"), error = function(e) FALSE)
  if (!isTRUE(ok)) {
    python <- tryCatch(reticulate::py_config()$python, error = function(e) python)
    stop(.scviext_missing_python_message(python), call. = FALSE)
  }
  if (is.null(.scviext_env$torch_load)) .scviext_env$torch_load <- .load_torch_deepbind()
  .scviext_env$interop <- reticulate::import("scvi_ext.interop", convert = TRUE)
  .scviext_env$interop
}

# Import torch with RTLD_DEEPBIND (Linux), before scvi_ext imports it: otherwise libtorch_cpu.so binds its
# BLAS symbols (sgemm_, dgemm_, ...) to the shared BLAS that R already loaded (Debian: the reference
# libblas.so.3) rather than to its own MKL, and torch's matrix products become ~17x slower. Returns what
# happened (see ?scviext_config). Only torch's own import runs with the flag; the old flags are restored.
.torch_deepbind_code <- "
import os, sys
_deepbind = getattr(os, 'RTLD_DEEPBIND', None)
if 'torch' in sys.modules:
    status = 'imported before scviext'
elif _deepbind is None:
    status = 'platform default'
else:
    _flags = sys.getdlopenflags()
    try:
        import numpy  # noqa: F401  (imported without the flag)
    except ImportError:
        pass
    sys.setdlopenflags(_flags | _deepbind)
    try:
        import torch  # noqa: F401
        status = 'deepbind'
    except ImportError:
        status = 'torch not importable'
    finally:
        sys.setdlopenflags(_flags)
"

.load_torch_deepbind <- function() {
  if (!isTRUE(getOption("scviext.torch_deepbind", TRUE))) return("disabled")
  status <- tryCatch(reticulate::py_run_string(.torch_deepbind_code, local = TRUE)$status,
                     error = function(e) "torch not importable")
  if (identical(status, "imported before scviext")) {
    warning(paste0("torch was imported in this R session before scviext: its matrix products may run through ",
                   "R's BLAS (much slower on Linux). Restart R and call a scviext function before importing ",
                   "torch (see ?scviext_config)."), call. = FALSE)
  }
  status
}

# Call a Python function and turn a Python exception into one readable R error.
.scviext_call <- function(fun, ...) {
  interop <- .scviext_py()
  tryCatch(interop[[fun]](...), error = function(e) {
    msg <- conditionMessage(e)
    last <- tryCatch(reticulate::py_last_error(), error = function(e2) NULL)
    if (!is.null(last) && !is.null(last$value)) msg <- paste0(last$type, ": ", last$value)
    stop(sprintf("scvi_ext (Python) failed in %s(): %s", fun, msg), call. = FALSE)
  })
}

#' Create a Python virtualenv with scvi-ext
#'
#' Creates a virtualenv (\code{python -m venv}) and installs the CPU build of torch and scvi-ext into it
#' with pip. Offline: pass the local wheel in \code{wheel} and a folder of wheels (torch, scvi-tools and the
#' other dependencies, e.g. made with \code{pip wheel --wheel-dir wheels/ torch==2.13.0 ".[r]"}) in
#' \code{find_links}; pip then runs with \code{--no-index} and nothing is fetched from the network (unlike
#' \code{reticulate::virtualenv_create}, which always upgrades pip, setuptools, wheel and numpy from the index).
#'
#' @param envname Name of a virtualenv under \code{reticulate::virtualenv_root()}, or a path (contains a
#'   \code{/}).
#' @param wheel Path to a local \code{scvi_ext} wheel (or source folder); \code{NULL} installs
#'   \code{scvi-ext} from the package index.
#' @param find_links Folder of wheels to install from without an index (offline installs).
#' @param torch Requirement installed first, so that pip does not pull a CUDA build of torch.
#' @param python Python (>= 3.11) used to create the virtualenv (default: \code{python3} on the PATH).
#' @return Invisibly, the path of the virtualenv's Python.
#' @examples
#' \dontrun{
#' install_scviext("r-scviext", wheel = "dist/scvi_ext-0.1.0-py3-none-any.whl", find_links = "wheels/")
#' use_scviext(envname = "r-scviext")
#' }
#' @export
install_scviext <- function(envname = "r-scviext", wheel = NULL, find_links = NULL,
                            torch = "torch==2.13.0", python = NULL) {
  plan <- .install_plan(wheel = wheel, find_links = find_links, torch = torch)
  python <- .base_python(python)
  env_dir <- .env_dir(envname)
  env_python <- file.path(env_dir, "bin", "python")
  if (!file.exists(env_python)) .run_checked(python, c("-m", "venv", shQuote(env_dir)), "python -m venv")
  for (step in plan) {
    .run_checked(env_python, c("-m", "pip", "install", step$pip_options, shQuote(step$packages)), "pip install")
  }
  invisible(file.path(normalizePath(env_dir), "bin", "python"))  # not resolved: the link is the venv
}

# Where a virtualenv named `envname` lives: a path as given, a bare name under reticulate's virtualenv root.
.env_dir <- function(envname) {
  if (!is.character(envname) || length(envname) != 1L || !nzchar(envname)) {
    stop("install_scviext(): `envname` must be one non-empty string.", call. = FALSE)
  }
  if (grepl("/", envname, fixed = TRUE)) return(path.expand(envname))
  file.path(reticulate::virtualenv_root(), envname)
}

# The interpreter that creates the virtualenv.
.base_python <- function(python = NULL) {
  if (is.null(python)) python <- unname(Sys.which("python3"))
  if (!nzchar(python) || !file.exists(python)) {
    stop("install_scviext(): no Python found; pass `python = \"/path/to/python3\"` (>= 3.11).", call. = FALSE)
  }
  python
}

# Run a command, stop with its output when it fails.
.run_checked <- function(cmd, args, what) {
  status <- system2(cmd, args)
  if (!identical(as.integer(status), 0L)) {
    stop(sprintf("install_scviext(): %s failed (exit status %s): %s %s", what, status, cmd,
                 paste(args, collapse = " ")), call. = FALSE)
  }
  invisible(TRUE)
}

# The pip steps install_scviext() runs (kept apart so it can be tested without installing anything).
.install_plan <- function(wheel = NULL, find_links = NULL, torch = "torch==2.13.0") {
  if (!is.null(wheel) && !file.exists(wheel)) {
    stop(sprintf("install_scviext(): wheel '%s' does not exist.", wheel), call. = FALSE)
  }
  if (!is.null(find_links) && !dir.exists(find_links)) {
    stop(sprintf("install_scviext(): find_links folder '%s' does not exist.", find_links), call. = FALSE)
  }
  opts <- character()
  if (!is.null(find_links)) opts <- c("--no-index", paste0("--find-links=", normalizePath(find_links)))
  target <- if (is.null(wheel)) "scvi-ext[r]" else paste0(normalizePath(wheel), "[r]")
  plan <- list()
  if (!is.null(torch) && nzchar(torch)) plan[[length(plan) + 1]] <- list(packages = torch, pip_options = opts)
  plan[[length(plan) + 1]] <- list(packages = target, pip_options = opts)
  plan
}
