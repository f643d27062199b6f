# Set-up and everyday commands. `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A CPU build of torch that this machine may keep on local disk; installed first so that the
# `torch>=2.3` requirement does not pull a multi-GB CUDA build.
LOCAL_TORCH ?= torch==2.13.0

.PHONY: test typecheck demo venv clean bench gpu-wheels

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -m pip install -q --no-index --no-deps $(LOCAL_TORCH) >/dev/null 2>&1; then \
		echo "installed the local CPU torch wheel ($(LOCAL_TORCH)); adding its dependencies"; \
		$(PY) -m pip install -q $(LOCAL_TORCH); \
	else echo "no local $(LOCAL_TORCH) wheel here; pip resolves torch>=2.3"; fi
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test: typecheck
	$(PY) -m pytest -q tests

# mypy over src/ with the settings in pyproject.toml's [tool.mypy]
typecheck: venv
	$(PY) -m mypy

demo: venv
	$(VENV)/bin/cosface demo --out demo_out

bench: venv
	$(PY) benchmarks/train_throughput.py --device cpu

# Wheels for benchmarks/gpu_check.sh on a lent GPU machine that cannot reach a package index (its Python is
# 3.12 on x86-64): simplejpeg, and nvImageCodec with its nvJPEG library for data.decoder = "gpu".
GPU_PYTHON ?= 3.12
GPU_WHEELS ?= simplejpeg nvidia-nvimgcodec-cu13 nvidia-nvjpeg
gpu-wheels:
	rm -rf .whl && $(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	ls -l .whl

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info demo_out .mypy_cache
