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

.PHONY: install test demo lint clean toolchains

$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '$(TORCH_SPEC)'
	$(PY) -m pip install -q -e '.[$*]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The whole recipe on CPU in about 4 minutes (README "The demo"); re-running resumes. make demo BUDGET=ci: < 1 minute.
demo: $(VENV)/.installed-demo
	$(PY) -m nemotron4.cli demo --run-dir $(RUN_DIR) --config configs/demo.toml --budget $(BUDGET)

# The MultiPL-E toolchains from Debian (README "MultiPL-E"): as root, or through sudo. Installs only what is missing
# (a no-op when all are there). Julia is not packaged by Debian: install it from julialang.org.
TOOLCHAIN_PACKAGES = $(shell $(PYTHON) nemotron4/eval/languages.py)
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)
toolchains:
	@missing=""; for p in $(TOOLCHAIN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "toolchains: all installed"; else \
	  echo "toolchains: installing$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

lint: $(STAMP)
	$(PY) -m pip install -q ruff && $(VENV)/bin/ruff check nemotron4 tests bench

clean:
	rm -rf $(VENV) build *.egg-info
