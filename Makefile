# The two commands of the README: `make run` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= $(or $(MELANOMA_DATA),../shared/data/melanoma)

.PHONY: run test clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0 (pyproject.toml); on these machines pip takes its local CPU wheel
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Until the web page lands: classify a few real test images with the bundled model and write
# their Grad-CAM overlays to demo/. Override with `make run IMAGES="my_photo.jpg other/"`.
IMAGES ?= $(wildcard $(DATA)/test/Malignant/5622.jpg $(DATA)/test/Malignant/6370.jpg $(DATA)/test/Benign/6300.jpg $(DATA)/test/Benign/6301.jpg)
run: $(BIN)/.installed
	@test -n "$(IMAGES)" || { echo "no images: give IMAGES=\"photo.jpg ...\" or DATA=path/to/melanoma"; exit 2; }
	$(BIN)/melanoma predict $(IMAGES) --cam demo --csv demo/predictions.csv
	@echo "Grad-CAM overlays and predictions.csv written to demo/"

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo .pytest_cache
