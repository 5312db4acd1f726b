# Two commands on a fresh machine: `make demo` and `make test`. Both go through `make setup`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Where torch comes from. Empty: pip's configured indexes (a local CPU wheel where the machine has one).
# On a machine without one, pip's default index gives the CUDA build and its CUDA packages (several GB);
# `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs PyTorch's CPU-only build first.
TORCH_INDEX ?=

.PHONY: setup demo test lint typecheck bench clean engines torch-info

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PIP) install --quiet -c constraints.txt --index-url $(TORCH_INDEX) torch)
	$(PIP) install --quiet -c constraints.txt -e ".[test]"
	@$(MAKE) --no-print-directory torch-info
	touch $(STAMP)

# Which torch build the venv holds: its version and whether CUDA is compiled in.
torch-info:
	@$(PY) -c "import torch; c = torch.version.cuda; print(f'torch {torch.__version__}: ' + (f'CUDA {c} compiled in (cuda available: {torch.cuda.is_available()})' if c else 'CPU-only build, no CUDA compiled in'))"

demo: setup
	$(PY) examples/demo.py

test: setup
	$(PY) -m pytest

lint: setup typecheck
	$(VENV)/bin/ruff check .

# mypy over agentkit/ (settings in pyproject.toml's [tool.mypy]); CI runs it too (.ci/run)
typecheck: setup
	$(VENV)/bin/mypy

bench: setup
	$(PIP) install --quiet -c constraints.txt -e ".[test,benchmark]"
	@echo "benchmarks: see benchmarks/README.md"

# The game engines that the engine tests run for real (exports/godot, exports/csharp, exports/web):
# Debian's packages, installed as root; nothing is done when they are all there already.
ENGINE_PACKAGES := godot3-server mono-mcs mono-runtime chromium

engines:
	@missing=""; for p in $(ENGINE_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "engines: $(ENGINE_PACKAGES) already installed"; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "engines: missing$$missing; as root run: apt-get install -y --no-install-recommends$$missing" >&2; exit 1; \
	else \
	  echo "engines: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

clean:
	rm -rf $(VENV) runs build *.egg-info
