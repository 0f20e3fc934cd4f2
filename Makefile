# The two commands of the README: `make run` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= $(or $(MELANOMA_DATA),../shared/data/melanoma)

.PHONY: run test test-fast clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0 (pyproject.toml); on these machines pip takes its local CPU wheel
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# The web page on the bundled model: open http://127.0.0.1:8501 (PORT=... to change it).
PORT ?= 8501
run: $(BIN)/.installed
	$(BIN)/melanoma serve --port $(PORT)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

# The quick ones only (tests marked slow left out), while developing; `make test` runs all.
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
