# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MINUTES ?=
STAMP  := $(VENV)/.installed

.PHONY: setup data demo test lint bench clean

setup: $(STAMP)

# --no-compile: byte-compiling all of torch took 50 of set-up's 80 s here; Python compiles what it imports, once
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST from Debian's package when we may install it; otherwise the demo downloads it.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || echo "apt-get failed; the demo will download the data"; \
	fi

demo: setup data
	$(BIN)/imagegen demo --out runs/demo --download $(if $(MINUTES),--minutes $(MINUTES),)

# one process per core (pytest-xdist; tests/conftest.py gives each worker one torch thread): ~260-390 s.
# PYTHONDONTWRITEBYTECODE emptied: where a machine sets it (these do), every test process that imports torch compiled
# its source again (3-4 s each); this way the first compiles it once into __pycache__, as --no-compile above expects
test: setup data
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n auto

lint: setup
	$(BIN)/ruff check src tests bench

bench: setup
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python bench/classifier.py
	$(BIN)/python bench/evaluator.py
	$(BIN)/python bench/generators.py
	$(BIN)/python bench/peer_diffusers.py

clean:
	rm -rf $(VENV) runs .pytest_cache
