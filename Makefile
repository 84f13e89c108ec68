# Front door for acd-router.  `make demo` and `make test` work on a fresh clone:
# they create .venv, install the package (which compiles the Cython matcher) and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench compile venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py ext/matcher.pyx
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -c "import router.engine.cmatcher" || { echo "the compiled matcher did not build" >&2; exit 1; }
	@touch $@

# Rebuild the extension in place after editing ext/*.pyx.
compile: $(STAMP)
	$(PY) setup.py --quiet build_ext --inplace

demo: $(STAMP)
	$(VENV)/bin/acd-router simulate --hours 8 --seed 1

test: $(STAMP)
	ACD_REQUIRE_COMPILED=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/matcher.py
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/simulate.py

clean:
	rm -rf $(VENV) build router/engine/*.so ext/*.c
