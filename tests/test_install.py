"""The installed wheel runs anywhere.

Builds the wheel (with this venv's locked setuptools and Cython, so the
matcher is compiled as a user's `pip install` compiles it), installs it into a
fresh venv beside the locked dependencies, and runs the commands a new user
runs from an empty directory: nothing may come from the source tree."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


def locked() -> dict[str, tuple[str, int]]:
    """requirements.lock: name -> (version, number of hashes)."""
    pins: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z])", (REPO / "requirements.lock").read_text()):
        pin = re.match(r"([A-Za-z0-9._-]+)==([^\s\\]+)", block)
        if pin:
            pins[canonicalize_name(pin.group(1))] = (pin.group(2), block.count("--hash=sha256:"))
    return pins


def test_the_lock_pins_every_requirement_of_pyproject_in_its_range_with_hashes():
    """Editing pyproject.toml without `make lock` fails here, not on a user's machine."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["project"]["optional-dependencies"]["test"],
              *project["build-system"]["requires"]]
    pins = locked()
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        version, hashes = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} is not {text}"
        assert hashes > 0, f"{name} has no hash in requirements.lock"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """`bin` of a fresh venv holding the wheel, an empty `work` directory and a `data` directory."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(root / "dist"), str(REPO)], check=True, capture_output=True)
    wheel, = (root / "dist").glob("acd_router-*.whl")
    venv.EnvBuilder(with_pip=True).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    for args in (["--require-hashes", "--no-deps", "-r", str(REPO / "requirements.lock")], ["--no-deps", str(wheel)]):
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
                       check=True, capture_output=True)
    (root / "work").mkdir()
    return {"bin": root / "venv" / "bin", "work": root / "work", "data": root / "pgdata"}


def run(installed: dict[str, Path], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "ACD_DATABASE_URL", "VIRTUAL_ENV")}
    return subprocess.run([str(installed["bin"] / args[0]), *args[1:]], cwd=installed["work"], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_package_is_the_installed_wheel_not_the_checkout(installed):
    done = run(installed, "python", "-c", "import router, router.engine.cmatcher as m; print(router.__file__, m.__file__)")
    assert done.returncode == 0, done.stderr
    package, matcher = done.stdout.split()
    assert "site-packages" in package and not package.startswith(str(REPO))
    assert matcher.endswith(".so") and "site-packages" in matcher


def test_packaged_flows_validate_and_pass_their_tests_from_an_empty_directory(installed):
    validated = run(installed, "acd-router", "flows", "validate")
    assert validated.returncode == 0, validated.stderr
    assert "site-packages/router/samples/ivr_flows: 4 flow(s) valid" in validated.stderr
    tested = run(installed, "acd-router", "flows", "test")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert list(installed["work"].iterdir()) == []


def test_simulate_then_kpi_from_an_empty_directory_on_the_embedded_database(installed):
    data = str(installed["data"])
    simulated = run(installed, "acd-router", "simulate", "--hours", "1", "--seed", "3", "--json", "--data-dir", data)
    assert simulated.returncode == 0, simulated.stderr
    figures = json.loads(simulated.stdout)
    assert figures["offered"] > 0 and figures["answered"] > 0
    report = run(installed, "acd-router", "kpi", "--run", figures["run"], "--json", "--data-dir", data)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["offered"] == figures["offered"]


def test_the_demo_serves_from_an_empty_directory_until_interrupted(installed):
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "ACD_DATABASE_URL")}
    process = subprocess.Popen([str(installed["bin"] / "acd-router"), "serve", "--speed", "60",
                                "--web-port", "0", "--data-dir", str(installed["data"])],
                               cwd=installed["work"], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True)
    try:
        for line in process.stderr:
            if '"status"' in line:
                break
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "demo stopped" in stderr
