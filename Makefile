# The README's two commands: `make demo` and `make test`. Both set up everything on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/echodistill demo --preset $(or $(PRESET),default)

test: setup
	$(PY) -m pytest -x -p no:cacheprovider tests

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs data/bench models
