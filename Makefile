# scvi-ext: `make demo` and `make test` each create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU wheel of torch 2.13.0 lies on this machine's disk; installing it first keeps pip from
# pulling a multi-GB CUDA build when scvi-tools asks for torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-r r-deps lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev,bench]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/scvi-ext demo --out out/demo

test: $(VENV)/.installed r-deps
	$(PY) -m pytest -q
	$(MAKE) test-r

# R package r/scviext: installs Debian's R stack when missing (no recommends: ~190 packages, ~40 s here,
# against ~750 packages / ~10 min with them), then runs its testthat tests against this .venv and R CMD check.
R_DEBS := r-base-core r-cran-seurat r-cran-reticulate r-cran-testthat r-bioc-singlecellexperiment
R_LIB := $(abspath out/r-lib)
# Debian's R stack and rpy2 (extra `r`): installed when missing, before pytest, so the interop tests run.
r-deps: $(VENV)/.installed
	@if ! command -v Rscript >/dev/null || ! Rscript -e 'for (p in c("Seurat","reticulate","testthat","SingleCellExperiment")) if (!requireNamespace(p, quietly = TRUE)) quit(status = 1)' >/dev/null 2>&1; then \
	  echo "[r-deps] installing R: $(R_DEBS)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(R_DEBS); fi
	@$(PY) -c "import rpy2, anndata2ri" 2>/dev/null || $(PIP) install -q -e ".[r]"

test-r: r-deps
	mkdir -p $(R_LIB) out/r-check
	R CMD INSTALL --no-test-load --library=$(R_LIB) r/scviext
	cd r/scviext/tests && R_LIBS=$(R_LIB) RETICULATE_PYTHON=$(abspath $(PY)) SCVIEXT_SHARED_DATA=$(abspath ../shared/data) \
	  Rscript -e 'library(testthat); library(scviext); r <- as.data.frame(test_dir("testthat", reporter = "summary", stop_on_failure = FALSE)); cat(sprintf("\nscviext: %d passed, %d failed, %d skipped\n", sum(r$$failed == 0 & !r$$skipped & !r$$error), sum(r$$failed > 0 | r$$error), sum(r$$skipped))); quit(status = as.integer(any(r$$failed > 0 | r$$error)))'
	cd out/r-check && R CMD build --no-build-vignettes $(abspath r/scviext) && \
	  _R_CHECK_FORCE_SUGGESTS_=false R_LIBS=$(R_LIB) RETICULATE_PYTHON=$(abspath $(PY)) SCVIEXT_SHARED_DATA=$(abspath ../shared/data) \
	  R CMD check --no-manual --no-tests scviext_*.tar.gz && \
	  ! grep -E "^Status: .*(ERROR|WARNING)" scviext.Rcheck/00check.log

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py --dataset ../shared/data/pbmc68k_reduced_counts/pbmc68k_reduced_counts.h5ad \
	  --batch-key lane --labels-key bulk_labels

clean:
	rm -rf $(VENV) out .pytest_cache
