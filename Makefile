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

## Debian packages some tests use: Fashion-MNIST, headless Chromium (for the report check) and g++
## (torch.compile on CPU builds C++: tests/engine/test_compiled_step.py fails without it, never skips).
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
		command -v g++ >/dev/null || m="$$m g++"; \
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

## `make run` = `dvc repro`, then, in a git clone whose tree has no other uncommitted change (a fresh
## clone), one commit of the results (dvc.lock and the small git-tracked outputs). That commit is the
## baseline row of `dvc exp show`: `dvc exp run -S method=simclr` experiments are listed under it and
## compared with it. Anywhere else the results stay in the workspace, and it says so.
RESULTS := dvc.lock metrics dvclive reports
run: install
	dvc repro
	@if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		echo "note: not a git repository: the results stay in the workspace"; \
	elif [ -n "$$(git status --porcelain -- . $(foreach p,$(RESULTS),':!$(p)'))" ]; then \
		echo "note: other uncommitted changes in the tree: the results stay in the workspace" \
			"(record them with: git add $(RESULTS) && git commit)"; \
	elif git add $(RESULTS) && git diff --cached --quiet -- $(RESULTS); then \
		echo "results unchanged since the last commit"; \
	elif git commit -q -m "make run: results of params.yaml (dvc repro)" -- $(RESULTS); then \
		echo "results committed ($$(git rev-parse --short HEAD)): the baseline of \`dvc exp show\`"; \
	else echo "note: git commit failed: the results stay in the workspace"; fi

test: install datasets lint
	$(PY) -m pytest

## Static checks (part of `make test`): ruff on all Python, mypy on the library and the stages.
lint: install
	$(PY) -m ruff check jem stages pipelines tests benchmarks
	$(PY) -m mypy jem stages pipelines/sweep/sweep.py

clean:
	rm -rf data models metrics reports dvclive .jem
