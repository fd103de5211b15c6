# The two commands of the README: `make run` serves the default model, `make test` runs the tests.
# They need Python 3.11+ (checked by `make prereqs` before the virtualenv is made): PYTHON=... names
# one, else python3.11, else python3.
PYTHON ?= $(or $(shell command -v python3.11 2>/dev/null),$(shell command -v python3 2>/dev/null),python3.11)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
SLIM_STAMP := $(VENV)/.installed-slim
# A visible NVIDIA GPU: `make run` installs PyTorch to serve on it; without one, the slim install.
GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: install install-slim run test test-fast test-slow lint typecheck bench-runtimes clean

$(PY):
	@$(MAKE) --no-print-directory check-python PYTHON="$(PYTHON)"
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml requirements.lock | $(PY)
	$(PIP) install --quiet pip==26.3
	$(PIP) install --quiet -c requirements.lock -e ".[torch,test,train,bench]"
	touch $(STAMP)

install: $(STAMP)

# The slim CPU server: ONNX Runtime and NumPy, no PyTorch (about 500 MB). Silero VAD's wheel
# declares torch as a dependency though its ONNX file needs none, so it goes in without its deps.
$(SLIM_STAMP): pyproject.toml requirements.lock | $(PY)
	$(PIP) install --quiet pip==26.3
	$(PIP) install --quiet -c requirements.lock -e .
	$(PIP) install --quiet --no-deps -c requirements.lock silero-vad
	touch $(SLIM_STAMP)

install-slim: $(SLIM_STAMP)

# Serves the default model: on a GPU with PyTorch; on a CPU the slim path (ONNX Runtime), from the
# slim install, or from the full one where `make install` (or `make test`) already made it.
run: $(if $(GPU),install,$(if $(wildcard $(STAMP)),install,install-slim))
	$(VENV)/bin/asr-serve

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check app train bench tests

typecheck: install
	$(VENV)/bin/mypy

# The CI suite: lint, types, deployment checks, then every test not marked slow, gpu, browser or abuse.
# CHECK_DEPLOY=0 leaves out the deployment checks (they fetch kubectl and promtool with Debian's apt).
CHECK_DEPLOY ?= 1
test: install lint typecheck $(if $(filter 1,$(CHECK_DEPLOY)),check-deploy)
	$(PY) -m pytest -m "not slow and not gpu and not browser and not abuse" -q

test-fast: install
	$(PY) -m pytest -m "not slow and not gpu and not browser and not abuse and not e2e" -q -x

test-slow: install
	$(PY) -m pytest -m "slow" -q

bench-runtimes: install  ## single-stream speed of each runtime (eager, folded, compile, ONNX fp32/int8)
	$(PY) -m bench.runtimes

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

-include mk/*.mk
