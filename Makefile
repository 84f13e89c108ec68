# Front door for acd-router.  `make demo` and `make test` work on a fresh clone:
# they create .venv, install the exact versions of requirements.lock (hashes
# checked), build the package against the locked setuptools and Cython (which
# compiles the matcher, the event encoder and the engine's hot path: setup.py)
# and run.  `make lock` refreshes the lock from pyproject.toml's ranges: a
# refresh that breaks a test is a visible change.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
UV_VERSION := 0.13.9

.PHONY: demo test bench compile venv lock clean

venv: $(STAMP)

# the engine's hot path, compiled from its own source (router/_twins.py)
TWINS := router/events.py router/engine/messages.py router/engine/agents.py router/engine/engine.py \
         router/sim/traffic.py router/sim/simulator.py $(wildcard ext/router/*.pxd ext/router/*/*.pxd)

$(STAMP): pyproject.toml setup.py ext/matcher.pyx ext/encoder.pyx $(TWINS) requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	$(PY) -c "import router.engine.cmatcher" || { echo "the compiled matcher did not build" >&2; exit 1; }
	$(PY) -c "import router.store.cencoder" || { echo "the compiled event encoder did not build" >&2; exit 1; }
	ACD_REQUIRE_COMPILED=1 $(PY) -c "import router" || { echo "the engine's hot path did not build" >&2; exit 1; }
	@touch $@

# Rebuild the extensions in place after editing ext/ or a compiled module (router/_twins.py:
# until then, an edited one runs from its source, with a warning).
compile: $(STAMP)
	$(PY) setup.py --quiet build_ext --inplace

# The demo service: the sample centre's day from 08:00 on the simulated PBX at 10x,
# with the dashboard (its address is the first line printed); Ctrl-C stops it.
# `acd-router simulate` is the batch report of a simulated day.
demo: $(STAMP)
	$(VENV)/bin/acd-router serve --speed 10 --start 08:00

# The tests, then the Docker stack (deploy/) built, started and put under real
# SIP load (deploy/test-stack: it starts a Docker engine when none runs, and
# stops the Asterisk sandbox, whose ports the stack takes).
test: $(STAMP)
	ACD_REQUIRE_COMPILED=1 $(PY) -m pytest -q
	ACD_PYTHON=$(PY) deploy/test-stack --calls 40 --cps 4 --check

bench: $(STAMP)
	$(PY) benchmarks/matcher.py
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/simulate.py

# The lock: pyproject.toml's dependencies with the test extra, plus what the
# build and the venv need (build-system.requires and pip), for Python 3.11.
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(PY) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], "pip", sep="\n")' > $(VENV)/build-requires.in
	$(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 --extra test \
	    --custom-compile-command "make lock" -o requirements.lock pyproject.toml $(VENV)/build-requires.in

clean:
	rm -rf $(VENV) build router/*.so router/*/*.so ext/*.c
