# scvi-ext: `make demo` and `make test` each create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU wheel of torch 2.13.0 lies on this machine's disk; installing it first keeps pip from
# pulling a multi-GB CUDA build when scvi-tools asks for torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev,bench]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/scvi-ext demo --out out/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q
	@if [ -d r/scviext ]; then $(MAKE) test-r; fi

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py --dataset ../shared/data/pbmc68k_reduced_counts/pbmc68k_reduced_counts.h5ad \
	  --batch-key lane --labels-key bulk_labels

clean:
	rm -rf $(VENV) out .pytest_cache
