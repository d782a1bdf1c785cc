# OCC-MLLM studio. `make demo` opens the app, `make test` runs the tests, `make bench` lists the benchmarks
# (`make bench ARGS="bench_cot --help"` runs one); all set everything up first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c  # a failed pip install fails the set-up (the filters below drop only noise)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEB_PACKAGES := python3-venv libosmesa6 libgl1-mesa-dri libegl1 libgles2 chromium fonts-dejavu-core mate-backgrounds
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1
export PYOPENGL_PLATFORM ?= osmesa

.PHONY: setup demo test bench clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml Makefile
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo ">> installing Debian packages: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@[ -x $(BIN)/python ] || { echo ">> creating $(VENV)"; $(PY) -m venv $(VENV); }
	@$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	@$(BIN)/python -c "import torch" 2>/dev/null || { echo ">> installing torch (CPU build)"; $(BIN)/python -m pip install -q torch==2.13.0 2>&1 | { grep -v "^WARNING: Location" || true; }; }
	@echo ">> installing requirements.txt, requirements-dev.txt"
	@$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt 2>&1 | { grep -v '^WARNING: Location' || true; }
	@$(BIN)/python -m pip install -q "PyOpenGL>=3.1.7" 2>&1 | { grep -vE "^WARNING: Location|dependency (resolver|conflicts)|pyrender .* requires PyOpenGL" || true; }
	@echo ">> installing the project's commands (pip install --no-deps -e .: occmllm-studio, occmllm-train, ...)"
	@$(BIN)/python -m pip install -q --no-deps -e . > $(VENV)/install-commands.log 2>&1 || \
	  echo "warning: the occmllm-* commands were not installed (see $(VENV)/install-commands.log); the python -m forms work"
	@touch $@

demo: setup
	$(BIN)/python -m demo $(ARGS)

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(ARGS)

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks $(ARGS)

clean-venv:
	rm -rf $(VENV)
