# The two commands: `make run` (venv + install + dvc repro) and `make test` (venv + install + suite).
# Both use the virtualenv at .venv unless VENV=/some/path is given.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jem-installed
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := true

.PHONY: install run test lint datasets clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## Debian packages some tests use: Fashion-MNIST and headless Chromium (for the report check).
## Outside CI, when they cannot be installed (not root, no apt-get, apt fails) the tests that need
## them skip with a reason. Under CI=true (.ci/run sets it; CI runs as root) that is an error:
## one line naming what is missing, non-zero exit, so `make test` stops instead of skipping.
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
APT_GET ?= apt-get
datasets:
	@missing() { m=""; \
		[ -e $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ] || m="$$m dataset-fashion-mnist"; \
		command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
			|| command -v google-chrome >/dev/null || m="$$m chromium"; \
		echo "$$m"; }; \
	need="$$(missing)"; [ -z "$$need" ] && exit 0; \
	if ! command -v $(APT_GET) >/dev/null; then why="no apt-get"; \
	elif [ "$$(id -u)" != 0 ]; then why="not root"; \
	elif ! ($(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq $$need >/dev/null); \
		then why="apt-get install failed"; \
	else why="still missing after apt-get install"; fi; \
	need="$$(missing)"; [ -z "$$need" ] && exit 0; \
	if [ "$${CI:-}" = true ]; then \
		echo "error: CI=true but could not install$$need ($$why); the tests that need them would fail" >&2; exit 1; fi; \
	echo "note: could not install$$need ($$why); the tests that need them will be skipped"

run: install
	dvc repro

test: install datasets lint
	$(PY) -m pytest

## Static checks (part of `make test`): ruff on all Python, mypy on the library and the stages.
lint: install
	$(PY) -m ruff check jem stages pipelines tests benchmarks
	$(PY) -m mypy jem stages pipelines/sweep/sweep.py

clean:
	rm -rf data models metrics reports dvclive .jem
