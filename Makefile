# The two commands of the README: `make run` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= $(or $(MELANOMA_DATA),../shared/data/melanoma)

.PHONY: run test test-fast clean

# Each target installs what it needs (pyproject.toml's extras) at the tested releases (constraints.txt): `run` the page with
# PyTorch (the train extra: the page's switch to what lowered an estimate needs the PyTorch model), `test` everything.
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(BIN)/.installed-app: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[app,train]'
	touch $@

$(BIN)/.installed-dev: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@ $(BIN)/.installed-app

# The web page on the bundled model: open http://127.0.0.1:8501 (PORT=... to change it).
PORT ?= 8501
run: $(BIN)/.installed-app
	$(BIN)/melanoma serve --port $(PORT)

test: $(BIN)/.installed-dev
	$(BIN)/ruff check src tests tools
	$(BIN)/mypy
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q --durations=10 -n 3 --dist loadfile  # three workers (pytest-xdist), each test file on one, so a module fixture (the int8 export, a small training run) is built once; one torch thread in each and in their children: on 2 cores much of the suite waits on child processes, servers and the browser

# The quick ones only (tests marked slow left out), while developing; `make test` runs all.
test-fast: $(BIN)/.installed-dev
	$(BIN)/ruff check src tests tools
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
