# Entry points. Each target works on a fresh machine with Python 3.11: it creates .venv if missing and
# installs torch (CPU build) plus the project before running.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
SOURCES := pyproject.toml setup.py $(wildcard csrc/*.h csrc/*.cpp csrc/*/*.h csrc/*/*.cpp csrc/*/*.cu csrc/*/*.cuh)

.PHONY: install test demo bench lint clean

$(VENV)/.installed: $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==$(TORCH_VERSION) ninja setuptools wheel
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -e '.[test]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q --benchmark-skip

demo: install
	$(PY) -m relkd_bench.ablate

bench: install
	$(PY) -m pytest tests/benchmarks --benchmark-only
	$(PY) -m relkd_bench.bench --out results/benchmarks

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf build relkd_bench/_C*.so *.egg-info
