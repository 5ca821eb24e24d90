# `make test` and `make demo` each install what they need into .venv first (a stamp per set of extras).
# GPU users: make test TORCH_SPEC='torch==2.11.0' (or any torch >= 2.11 build you have).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(EXTRAS)
RUN_DIR ?= runs/demo
BUDGET ?= full

.PHONY: install test demo lint clean

$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '$(TORCH_SPEC)'
	$(PY) -m pip install -q -e '.[$*]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The whole recipe on CPU in about 10 minutes (README "The demo"); re-running resumes. make demo BUDGET=ci: 1 minute.
demo: $(VENV)/.installed-demo
	$(PY) -m nemotron4.cli demo --run-dir $(RUN_DIR) --config configs/demo.toml --budget $(BUDGET)

lint: $(STAMP)
	$(PY) -m pip install -q ruff && $(VENV)/bin/ruff check nemotron4 tests bench

clean:
	rm -rf $(VENV) build *.egg-info
