# Two commands do all set-up on a fresh machine; each creates the virtualenv it needs.
#   make demo   build specs/breast_cancer_mlp.yaml into export/breast_cancer_mlp/
#   make test   run the whole test suite (FAST=1 skips the slow end-to-end builds)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast bench clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if (3, 8) <= v[:2] <= (3, 11) else "symbuilder needs Python 3.8 to 3.11 (mxnet 1.9.1 needs numpy < 1.24); found %d.%d: run make PYTHON=python3.11 ..." % v[:2])'
	$(PYTHON) -m venv $(VENV)
	@echo "installing symbuilder and its dependencies into $(VENV) (pip shows its progress)"
	$(PY) -m pip install --progress-bar on --upgrade pip
	$(PY) -m pip install --progress-bar on -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/symbuilder build specs/breast_cancer_mlp.yaml

test: $(STAMP)
	$(PY) -m pytest -q $(if $(FAST),-m "not slow",)

bench: $(STAMP)
	$(PY) tests/benchmarks/bench_all.py

clean:
	rm -rf $(VENV) export/*/ .pytest_cache
