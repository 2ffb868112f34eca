# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test bench clean

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

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
