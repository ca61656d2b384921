# The two commands of the quick start. Each creates .venv if it is missing and
# installs from the pins (torch first, so nothing pulls a CUDA build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
EXPERIMENT ?= mnist1d_mlp

.PHONY: train test lint install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,launchers,text,science]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/whylearn-train experiment=$(EXPERIMENT) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=20 $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun
