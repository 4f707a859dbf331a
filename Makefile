# Efficient Vision Transformers from Scratch -- the two commands a newcomer needs:
#
#   make book    build the website into _build/html (from the outputs stored in the notebooks)
#   make test    run every test: unit tests, nbval on every notebook, the strict book build, the browser check
#
# Steps alone: make unit | make nbval | make site-check; make notebooks re-executes the notebooks in place.
# Everything installs itself on first use: the venv .venv from requirements.txt (redone when requirements.txt
# or pyproject.toml change), node_modules from package-lock.json (npm ci), and the offline JavaScript for the
# site in book/_static/vendor/ (tools/vendor_assets.py). Nothing here downloads from outside PyPI, npm or Debian.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
# The test steps run in the order listed and stop at the first failure; never in parallel.
.NOTPARALLEL:
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# Stamps: a target is redone only when the file it was made from is newer than its stamp.
VENV_STAMP := $(VENV)/.stamp-requirements
NPM_STAMP := node_modules/.stamp-package-lock
VENDOR_STAMP := book/_static/vendor/VERSIONS.json

# --all: rebuild every page; -W: warnings are errors; -n: nitpicky (every cross-reference must resolve);
# --keep-going: report every warning before failing, not just the first.
JB_FLAGS := --all -W -n --keep-going
# Unit tests and notebooks run in $(WORKERS) processes (pytest-xdist; `make test WORKERS=0` runs them in this one).
# Notebooks are handed out whole (--dist loadfile): each one's cells run in order in one kernel.
WORKERS ?= auto
NBVAL_FLAGS := -p no:cacheprovider -n $(WORKERS) --dist loadfile --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg \
	--nbval-cell-timeout=120 --ignore=book/_static
# `make notebooks NB=book/mobilevit.ipynb` re-executes just that one.
NB ?=
STEP := tools/step.sh

.PHONY: help book test unit nbval site-check notebooks venv assets chromium serve clean

help:
	@echo "make book        build the website into _build/html (open _build/html/index.html)"
	@echo "make test        run every test (unit, nbval, strict book build, browser check); stops at the first failure"
	@echo "make unit        unit tests only (tests/, without the browser check)"
	@echo "make nbval       re-run every notebook under book/ and compare with its stored outputs"
	@echo "make site-check  browser check of the built site (needs make book first)"
	@echo "make notebooks   re-execute notebooks in place to refresh their outputs (NB=path for one)"
	@echo "make serve       serve _build/html on http://127.0.0.1:8000"
	@echo "make clean       remove _build and the vendored JavaScript"

# ---- environment ---------------------------------------------------------------------------------------------

$(VENV_STAMP): requirements.txt pyproject.toml
	@if [ ! -x $(PY) ]; then echo "creating $(VENV)"; python3 -m venv $(VENV); fi
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(NPM_STAMP): package.json package-lock.json
	@# --ignore-scripts: we only need the packages' files (Font Awesome's postinstall just prints a notice).
	npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

$(VENDOR_STAMP): $(NPM_STAMP) $(VENV_STAMP) tools/vendor_assets.py
	$(PY) tools/vendor_assets.py

venv: $(VENV_STAMP)
assets: $(VENDOR_STAMP)

chromium:
	@tools/ensure_chromium.sh

# ---- the book ------------------------------------------------------------------------------------------------

BOOK_TITLE := book: jupyter-book build (strict) -> _build/html
book: $(VENV_STAMP) $(VENDOR_STAMP)
	@$(STEP) "$(BOOK_TITLE)" $(VENV)/bin/jupyter-book build $(JB_FLAGS) .

serve:
	@test -f _build/html/index.html || { echo "run \`make book\` first"; exit 1; }
	$(PY) -m http.server --bind 127.0.0.1 --directory _build/html 8000

# ---- tests ---------------------------------------------------------------------------------------------------

# (A target-specific variable applies to the prerequisites too: the build is labelled as step 3 here.)
test: BOOK_TITLE := 3/4 strict book build: jupyter-book build $(JB_FLAGS) .
test: unit nbval book site-check
	@echo
	@echo "==> make test: all four steps passed (unit, nbval, book build, browser check)"

unit: $(VENV_STAMP)
	@$(STEP) "1/4 unit tests: pytest tests --ignore=tests/site" $(VENV)/bin/pytest tests --ignore=tests/site -q -n $(WORKERS)

nbval: $(VENV_STAMP)
	@if [ -z "$$(find book -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' -not -path 'book/_static/*' -print -quit)" ]; then \
		echo; \
		echo "!!!!!!!!!! 2/4 nbval: there are NO notebooks under book/ yet -- step SKIPPED !!!!!!!!!!"; \
	else \
		$(STEP) "2/4 nbval (strict): re-run every notebook under book/ and compare outputs" --no-tests-ok \
			$(VENV)/bin/pytest --nbval book $(NBVAL_FLAGS); \
	fi

site-check: $(VENV_STAMP) chromium
	@$(STEP) "4/4 browser check of _build/html: pytest tests/site" $(VENV)/bin/pytest tests/site -q

notebooks: $(VENV_STAMP)
	$(PY) tools/execute_notebooks.py $(NB)

clean:
	rm -rf _build book/_static/vendor
