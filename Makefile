# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-deep bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	@echo "== a correct LeNet-style network: every gradient matches =="
	$(BIN)/gradcheck check configs/lenet.yaml --color always
	@echo
	@echo "== a hand-written plugin layer with a bug: gradcheck finds it (exit code 1) =="
	$(BIN)/gradcheck check configs/broken/plugin_buggy.yaml --color always; test $$? -eq 1

# One pytest worker per core (pytest-xdist): the diagnose seed sweeps dominate and split evenly.
# One BLAS thread per worker, as the gradcheck command runs (more only oversubscribe the cores).
BLAS_ONE_THREAD := OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 OMP_NUM_THREADS=1
test: $(STAMP)
	$(BLAS_ONE_THREAD) $(BIN)/python -m pytest -n auto

# Slow and random: fresh hypothesis examples on every run (20x as many) and the sweeps marked
# `deep`. Not part of CI; run it before a release or after touching a verdict.
test-deep: $(STAMP)
	$(BLAS_ONE_THREAD) GRADCHECK_DEEP=1 $(BIN)/python -m pytest -n auto

# Bench only: torch is the reference, pinned, and never a dependency of gradcheck itself. Single
# threaded on both sides; OPENBLAS_CORETYPE/L2_SIZE (set on some machines for old OpenBLAS builds)
# are unset for this command alone, since they slow a current numpy. gradcheck is byte-compiled
# first, as pip compiles an installed package (numpy, click, rich and yaml are): this install is
# editable, and where PYTHONDONTWRITEBYTECODE is set or a source changed since its .pyc, every
# process would compile gradcheck's sources again (0.1 s of a whole `gradcheck check`).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m compileall -q gradcheck
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
		$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
