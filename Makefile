# Developer entry points. `make demo` and `make test` are the README's two commands: each sets
# up (or refreshes) the virtual environment in .venv, builds the compiled ops, and runs.
#
#   PYMTL_CUDA=AUTO|ON|OFF   compile the CUDA kernels if nvcc works / always / never
#   PYMTL_NO_EXT=1           pure-Python install (ops fall back to their PyTorch references)
#   PYTHON=python3.11        interpreter that creates .venv

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# torch is pinned to the local CPU wheel and installed first, so that nothing resolves another
# torch (which would download several GB of CUDA packages).
TORCH  := torch==2.13.0
BUILD  := 'scikit-build-core>=0.11' 'pybind11>=2.13'

.PHONY: setup setup-test demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

setup: $(PY)
	$(PIP) install -q $(TORCH) $(BUILD)
	$(PIP) install -q --no-build-isolation -e .

setup-test: $(PY)
	$(PIP) install -q $(TORCH) $(BUILD)
	$(PIP) install -q --no-build-isolation -e ".[test]"

# the main job: train hard sharing with equal weights on the synthetic smoke preset
demo: setup
	$(VENV)/bin/pymtl train --dataset synthetic --preset smoke --arch hps --balancer ew \
	  --set train.epochs=10 --set train.batch_size=16 --set train.lr=0.003 \
	  --out runs/demo --overwrite

test: setup-test
	$(PY) -m pytest -n 2

lint: setup-test
	$(PY) -m ruff check pymtl tests bench plugins
	$(PY) -m ruff format --check pymtl tests bench plugins
	$(PY) -m mypy
	$(PY) .ci/check_sizes.py

bench: setup-test
	$(PY) -m pytest bench --benchmark-only --benchmark-autosave

clean:
	rm -rf build .venv .pytest_cache .mypy_cache .ruff_cache .benchmarks
