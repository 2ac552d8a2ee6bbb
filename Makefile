# The KPE companion's two commands (see README.md):
#   make book [SCALE=cpu|smoke|gpu|paper] [DEVICE=cpu|cuda]   execute every chapter, build the HTML book
#   make test                                             unit tests, smoke chapters under nbval, book, browser
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

SCALE ?= cpu
DEVICE ?= cpu
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAGE := _build/smoke-src
# The install stamp depends on what is installed, so editing the requirements re-runs pip.
INSTALLED := $(VENV)/.kpe-installed
# JUnit reports of every pytest step; .ci/run adds them up into one closing line.
REPORT := --junitxml=_build/reports
# A test (its fixtures included) that runs past this fails with its stack trace instead of holding CI until its
# limit: the slowest test takes about 40 s on an idle 2-core machine.
TIMEOUT := --timeout=600

.PHONY: help install chromium book test unit smoke-chapters nbval smoke-book browser clean

help:
	@echo "make book [SCALE=cpu|smoke|gpu|paper] [DEVICE=cpu|cuda]  - execute chapters, build _build/html"
	@echo "make test                                            - the full test suite (as CI runs it)"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): requirements-ci.txt requirements-nodeps.txt pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-ci.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements-nodeps.txt
	@touch $@

install: $(INSTALLED)

# Debian's chromium for the browser test (as root; apt-get update first).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make test needs /usr/bin/chromium: run 'sudo apt-get install -y chromium' first" >&2; exit 1; \
	  fi; \
	fi

book: install
	$(PY) -m kpe_lib build --scale $(SCALE) --device $(DEVICE)

# CI's command. Each step stops the run on failure; the smoke chapters live in a staging copy
# ($(STAGE)) so they never overwrite the cpu-executed chapters of `make book`.
test: install chromium unit smoke-chapters nbval smoke-book browser
	@echo "make test: all steps passed"

# Unit tests and every docstring example of the library (`>>>` lines run; `# doctest: +SKIP` marks the few
# that need data or weights).
unit: install
	$(PY) -m pytest tests kpe_lib --doctest-modules -m "not browser" -q -p no:cacheprovider $(TIMEOUT) $(REPORT)/unit.xml

smoke-chapters: install
	$(PY) -m kpe_lib run --scale smoke --device cpu --out $(STAGE)

# nbval re-executes the papermill-executed notebooks (explicit paths: a bare --nbval would also collect
# copies under _build); `# NBVAL_CHECK_OUTPUT` cells must reproduce papermill's printed numbers.
nbval: smoke-chapters
	KPE_ROOT=$(CURDIR) $(PY) -m pytest -q -p no:cacheprovider $(TIMEOUT) $(REPORT)/nbval.xml \
	  --nbval-lax --nbval-current-env $(STAGE)/book/chapters/*.ipynb

smoke-book: smoke-chapters
	$(PY) -m kpe_lib build --scale smoke --device cpu --out $(STAGE)

browser: smoke-book chromium
	KPE_BOOK_HTML=$(CURDIR)/$(STAGE)/_build/html KPE_REQUIRE_BROWSER=1 \
	  $(PY) -m pytest tests/test_browser.py -q -p no:cacheprovider $(TIMEOUT) $(REPORT)/browser.xml

clean:
	rm -rf _build book/chapters
