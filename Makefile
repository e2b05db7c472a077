# One entry point for people and CI. `make test` and `make demo` create .venv and install into it
# when it is missing or pyproject.toml changed; `make setup` does only that.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test demo clean

# torch/torchvision come from the pinned wheels; pip (not uv) resolves them.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/bocb zoo backbones
	$(BIN)/bocb zoo optimizers
	$(BIN)/bocb paper table

clean:
	rm -rf $(VENV) .pytest_cache
