# Two commands on a fresh machine: `make demo` and `make test`. Both go through `make setup`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean engines

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: setup
	$(PY) examples/demo.py

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

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
