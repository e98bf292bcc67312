# torch inside R: libtorch_cpu must use its own BLAS (MKL), not the shared BLAS that R has in its global
# symbol scope (Debian's reference libblas.so.3: ~17x slower matrix products, ~6x slower sysVI training).

test_that("scvi_ext's torch is imported with RTLD_DEEPBIND on Linux", {
  skip_if_no_python()
  status <- scviext_config()$torch_load
  expect_true(status %in% c("deepbind", "platform default"))
  if (Sys.info()[["sysname"]] == "Linux") expect_equal(status, "deepbind")
})

# Run R code in a fresh Rscript with the dynamic linker's binding log; return the lines about sgemm_.
sgemm_bindings <- function(code) {
  prefix <- tempfile("lddebug")
  env <- c(sprintf("R_LIBS=%s", paste(.libPaths(), collapse = .Platform$path.sep)), "LD_DEBUG=bindings",
           sprintf("LD_DEBUG_OUTPUT=%s", prefix), "OMP_NUM_THREADS=1")
  system2(file.path(R.home("bin"), "Rscript"), c("-e", shQuote(code)), stdout = FALSE, stderr = FALSE, env = env)
  logs <- list.files(dirname(prefix), pattern = paste0("^", basename(prefix)), full.names = TRUE)
  on.exit(unlink(logs))
  lines <- unlist(lapply(logs, readLines, warn = FALSE))
  grep("libtorch_cpu[^ ]* .*symbol `sgemm_'", lines, value = TRUE)
}

test_that("libtorch_cpu binds sgemm_ to itself, not to R's BLAS (dynamic linker log)", {
  skip_if_no_python()
  skip_on_os(c("windows", "mac", "solaris"))
  code <- paste0("library(scviext); invisible(scviext_config()); torch <- reticulate::import('torch'); ",
                 "x <- torch$ones(c(64L, 64L)); invisible(torch$matmul(x, x))")
  fixed <- sgemm_bindings(code)
  if (length(fixed) == 0) skip("no LD_DEBUG binding log (not glibc, or torch resolves sgemm_ internally)")
  targets <- sub(".* to ([^ ]+) .*", "\\1", fixed)
  expect_true(all(grepl("libtorch_cpu", targets)), info = paste(fixed, collapse = "\n"))
  # The control shows the test can see the problem: without the flag, R's BLAS (when it exports sgemm_) wins.
  old <- sgemm_bindings(paste0("options(scviext.torch_deepbind = FALSE); ", code))
  expect_true(length(old) > 0)
})
