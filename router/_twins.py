"""The compiled twins: the engine's hot path, compiled from the very .py files people read.

Theory of operation
-------------------
TWINS are compiled in place from their own source (setup.py), typed by the declarations in
ext/router/**/*.pxd (Cython's pure-Python mode): records become extension types with C
fields, hot methods C calls.  Each module's build sits beside its .py, and the .py is its
pure-Python twin: the same algorithm, the same events to the bit (tests/test_twins.py runs
the engine's and the simulator's tests on it and compares seeded event streams).

Which one imports: the builds, unless

* ACD_PURE_PYTHON=1 is in the environment (the twin tests, or to debug in Python);
* one of them is missing, or - in a source checkout (ext/router/ beside router/) - older than its
  .py or its .pxd: the source changed since it was compiled (`make compile` rebuilds), and
  the build would run the old code.

Then every twin imports from source (a build checks, on import, that the types it was
compiled against are the compiled ones: all or none).  A missing or stale build falls back
with a RuntimeWarning, or under ACD_REQUIRE_COMPILED=1 (CI, `make test`) is an ImportError.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from pathlib import Path

TWINS = ("router.events", "router.engine.messages", "router.engine.agents", "router.engine.engine",
         "router.sim.traffic", "router.sim.simulator")
_ROOT = Path(__file__).resolve().parent.parent          # the directory holding router/


def source_of(module: str, root: Path = _ROOT) -> Path:
    return root / (module.replace(".", "/") + ".py")


def build_of(module: str, root: Path = _ROOT) -> Path | None:
    """The compiled build beside the module's source; None when there is none."""
    source = source_of(module, root)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        build = source.with_suffix(suffix)
        if build.exists():
            return build
    return None


def why_source(root: Path = _ROOT) -> str | None:
    """Why the twins import from source; None when their builds are there and current."""
    if os.environ.get("ACD_PURE_PYTHON") == "1":
        return "ACD_PURE_PYTHON=1"
    declarations = root / "ext"
    checkout = (declarations / "router").is_dir()         # our declarations: a source checkout
    for module in TWINS:
        build = build_of(module, root)
        if build is None:
            return f"{module} is not compiled"
        if checkout:
            inputs = [source_of(module, root), declarations / (module.replace(".", "/") + ".pxd")]
            newer = [p for p in inputs if p.exists() and p.stat().st_mtime > build.stat().st_mtime]
            if newer:
                return f"{newer[0].relative_to(root)} changed after {module} was compiled"
    return None


class _FromSource(importlib.abc.MetaPathFinder):
    """Finds TWINS as their .py files, ahead of the builds beside them."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name not in TWINS:
            return None
        return importlib.util.spec_from_file_location(name, source_of(name))


def choose(reason: str | None) -> bool:
    """Called once, from router/__init__.py: True when the builds will import."""
    if reason is None:
        return True
    if reason != "ACD_PURE_PYTHON=1":
        if os.environ.get("ACD_REQUIRE_COMPILED") == "1":
            raise ImportError(f"ACD_REQUIRE_COMPILED=1 but {reason}: run `make compile` "
                              "(python setup.py build_ext --inplace)")
        warnings.warn(f"{reason}: the engine runs from its pure-Python source, which is much slower "
                      "(`make compile` rebuilds it)", RuntimeWarning, stacklevel=3)
    sys.meta_path.insert(0, _FromSource())
    return False


COMPILED = choose(why_source())
