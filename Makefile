# One entry point for people and CI. `make test` and `make demo` create .venv and install into it
# when it is missing or pyproject.toml changed; `make setup` does only that.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test demo demo-transfer clean

# torch/torchvision come from the pinned wheels; pip (not uv) resolves them.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Two workers: the suite spends much of its time in subprocesses starting up (measured: 5:20
# with -n 2 against ~6:00 serial on this 2-core machine).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

# The demo study (studies/demo.toml) into the default store, its results as CSV, and its report.
DEMO_STORE := bocb-results/store.sqlite

demo: $(STAMP)
	$(BIN)/bocb run studies/demo.toml --store $(DEMO_STORE) --slots 2
	$(BIN)/bocb export --store $(DEMO_STORE) --study studies/demo.toml --out bocb-results/demo.csv
	$(BIN)/bocb report studies/demo.toml --store $(DEMO_STORE) --out bocb-results/report-demo
	@echo "results: bocb-results/demo.csv, report: bocb-results/report-demo/report.html"

# The transfer demo: pre-train 2 tiny backbones x 3 optimizers on CIFAR-10 classes 0-4, fine-tune
# each with 4 optimizers on classes 5-9, then the transfer report.
demo-transfer: $(STAMP)
	$(BIN)/bocb run studies/transfer-pretrain.toml --store $(DEMO_STORE) --slots 2
	$(BIN)/bocb transfer studies/transfer-demo.toml --store $(DEMO_STORE) --slots 2
	$(BIN)/bocb report studies/transfer-demo.toml --store $(DEMO_STORE) --out bocb-results/report-transfer-demo
	@echo "report: bocb-results/report-transfer-demo/report.html"

clean:
	rm -rf $(VENV) .pytest_cache
