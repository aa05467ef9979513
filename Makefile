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
## Tests that need them skip with a reason when they cannot be installed (not root, no apt).
datasets:
	@need=""; [ -d /usr/share/datasets/fashion-mnist ] || need="$$need dataset-fashion-mnist"; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	if [ -n "$$need" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null) \
		|| echo "note: could not install$$need; the tests that need them will be skipped"; fi

run: install
	dvc repro

test: install datasets
	$(PY) -m pytest

lint: install
	$(PY) -m pip install -q ruff mypy
	$(VENV)/bin/ruff check jem stages tests

clean:
	rm -rf data models metrics reports dvclive .jem
