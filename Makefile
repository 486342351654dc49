# wbc-audit: `make demo` and `make test` work on a fresh machine (they create .venv when missing).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAMPLE_MODEL := model_zoo/pretrained/wbc5_small_cnn.keras
SAMPLE_DATA := sample_data/wbc5/test
SAMPLE_TRAIN := sample_data/wbc5/train
OUT ?= audits
SYSTEM_PACKAGES := chromium poppler-utils fonts-dejavu-core

.PHONY: demo test lint bench venv system-deps sample-data sample-model clean

venv: $(STAMP)

$(STAMP): setup.cfg
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	-$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	@$(VENV)/bin/wbc-audit $(SAMPLE_MODEL) $(SAMPLE_DATA) --train $(SAMPLE_TRAIN) --enable gradcam --out $(OUT) > .demo-out
	@echo "The report is in: $$(tail -n 1 .demo-out)"
	@echo "Open $$(tail -n 1 .demo-out)/report.html (or report.pdf); machine-readable: audit.json"
	@rm -f .demo-out

# Headless Chromium (HTML check), poppler-utils (PDF check) and fonts, installed only when missing.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v pdftoppm >/dev/null 2>&1 || missing="$$missing poppler-utils"; \
	fc-list 2>/dev/null | grep -q "DejaVu Sans" || missing="$$missing fonts-dejavu-core"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

# ruff (lint and format check) on the whole tree; mypy on the pure parts (no TensorFlow there).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy auditor/analyses auditor/sections auditor/report auditor/config.py

test: $(STAMP) system-deps lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench.run
	$(PY) -m bench.influence

# Regenerate the committed sample data and retrain the committed sample model (deterministic seeds).
sample-data: $(STAMP)
	$(PY) -m sample_data.make_wbc5

sample-model: $(STAMP)
	$(PY) -m model_zoo.train_sample --data sample_data/wbc5 --out $(SAMPLE_MODEL) --seed 20261123

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache audits
