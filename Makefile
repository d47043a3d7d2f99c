# The README's two commands: `make demo` and `make test`. Both set up everything on a fresh machine.
# `make test` is everything (what CI runs); `make test-fast` deselects the tests marked `slow` and runs
# on every core (pytest-xdist, one test file per worker).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/echodistill demo --preset $(or $(PRESET),default)

test: setup
	$(PY) -m pytest -x -p no:cacheprovider tests

test-fast: setup
	$(PY) -m pytest -x -p no:cacheprovider -m "not slow" -n auto --dist loadfile tests

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs data/bench models
