"""The compiled twins (router/_twins.py): the engine's hot path compiled from its own .py files.

Under ACD_REQUIRE_COMPILED=1 (CI, `make test`) every twin imports compiled, its records as
extension types; the pure-Python source gives the same seeded event streams and passes the
engine's and the simulator's tests, run again in a child process with ACD_PURE_PYTHON=1; a
build older than its source is not run.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import router
from router import _twins

REPO = Path(__file__).resolve().parent.parent
# the tests the pure-Python twin must pass as well: every test of the engine, its records and
# messages, and of the simulator around it
TWIN_TESTS = ["tests/test_engine.py", "tests/test_engine_restore.py", "tests/test_engine_supervisor.py",
              "tests/test_callbacks.py", "tests/test_callback_hours.py", "tests/test_events.py",
              "tests/test_simulation.py", "tests/test_sim_shifts.py", "tests/test_sim_ivr_callbacks.py",
              "tests/test_sim_golden.py", "tests/test_sim_history.py", "tests/test_twins.py"]
in_the_twin_run = pytest.mark.skipif(os.environ.get("ACD_PURE_PYTHON") == "1",
                                     reason="this is the child run on the pure-Python twin")


def _compiled(module: str) -> bool:
    return importlib.import_module(module).__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_the_environment_chooses_the_build_or_the_source():
    compiled = [_compiled(module) for module in _twins.TWINS]
    if os.environ.get("ACD_PURE_PYTHON") == "1":
        assert not any(compiled) and router.TWINS_COMPILED is False
        return
    if os.environ.get("ACD_REQUIRE_COMPILED") != "1" and not all(compiled):
        pytest.skip("the twins are not compiled here (`make compile`); CI requires them")
    assert all(compiled) and router.TWINS_COMPILED is True
    from router.engine.engine import CallRuntime, Engine
    assert not hasattr(Engine, "_enter") and not hasattr(Engine, "_emit")   # C methods, not Python ones
    with pytest.raises(AttributeError):
        CallRuntime.__new__(CallRuntime).not_a_field = 1                      # C fields, no __dict__


@in_the_twin_run
def test_the_pure_twin_gives_the_same_event_streams_and_passes_the_engine_tests():
    env = {**os.environ, "ACD_PURE_PYTHON": "1"}
    digests = subprocess.run(
        [sys.executable, "-c", "import json; from tests.test_sim_golden import GOLDEN, stream_digest; "
                               "print(json.dumps({name: stream_digest(name) for name in GOLDEN}))"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert digests.returncode == 0, digests.stderr
    from tests.test_sim_golden import GOLDEN
    assert json.loads(digests.stdout) == GOLDEN
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TWIN_TESTS],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and " failed" not in tests.stdout


def _tree(tmp_path: Path, *, checkout: bool) -> Path:
    """A copy of the layout: every twin's source and an (empty) build beside it; ext/ in a checkout."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for module in _twins.TWINS:
        source = _twins.source_of(module, tmp_path)
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text("")
        if checkout:
            declarations = tmp_path / "ext" / (module.replace(".", "/") + ".pxd")
            declarations.parent.mkdir(parents=True, exist_ok=True)
            declarations.write_text("")
        build = source.with_suffix(suffix)
        build.write_bytes(b"")
        os.utime(build, (source.stat().st_mtime + 10,) * 2)
    return tmp_path


def test_a_build_older_than_its_source_or_declarations_is_not_run(tmp_path, monkeypatch):
    monkeypatch.delenv("ACD_PURE_PYTHON", raising=False)
    root = _tree(tmp_path, checkout=True)
    assert _twins.why_source(root) is None
    engine = _twins.source_of("router.engine.engine", root)
    os.utime(engine, (engine.stat().st_mtime + 60,) * 2)                       # edited after the build
    assert _twins.why_source(root) == "router/engine/engine.py changed after router.engine.engine was compiled"
    os.utime(engine, (engine.stat().st_mtime - 60,) * 2)
    declarations = root / "ext/router/sim/simulator.pxd"
    os.utime(declarations, (declarations.stat().st_mtime + 60,) * 2)
    assert "ext/router/sim/simulator.pxd changed after router.sim.simulator" in _twins.why_source(root)


def test_an_installed_package_is_not_checked_against_mtimes_but_a_missing_build_is_noticed(tmp_path, monkeypatch):
    monkeypatch.delenv("ACD_PURE_PYTHON", raising=False)
    root = _tree(tmp_path, checkout=False)                                     # a wheel: no ext/
    engine = _twins.source_of("router.engine.engine", root)
    os.utime(engine, (engine.stat().st_mtime + 60,) * 2)
    assert _twins.why_source(root) is None
    _twins.build_of("router.engine.agents", root).unlink()
    assert _twins.why_source(root) == "router.engine.agents is not compiled"
    monkeypatch.setenv("ACD_PURE_PYTHON", "1")
    assert _twins.why_source(root) == "ACD_PURE_PYTHON=1"


def test_a_missing_or_stale_build_is_an_error_where_builds_are_required(monkeypatch):
    monkeypatch.setenv("ACD_REQUIRE_COMPILED", "1")
    finders = list(sys.meta_path)
    with pytest.raises(ImportError, match="ACD_REQUIRE_COMPILED=1 but router.engine.agents is not compiled"):
        _twins.choose("router.engine.agents is not compiled")
    assert sys.meta_path == finders
    assert _twins.choose(None) is True and sys.meta_path == finders
