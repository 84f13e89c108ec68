"""The sandbox Asterisk for the benchmarks that need one (vs_app_queue, failover, sip_load).

`sandbox_running()` runs ``scripts/asterisk-sandbox start`` (idempotent: it starts the
sandbox, or restarts it when asterisk_conf/ changed) and, on leaving, stops a sandbox
this run started, unless ACD_ASTERISK_KEEP=1.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

SANDBOX = Path(__file__).resolve().parents[1] / "scripts" / "asterisk-sandbox"


@contextlib.contextmanager
def sandbox_running() -> Iterator[None]:
    was_running = subprocess.run([str(SANDBOX), "status"], capture_output=True).returncode == 0
    started = subprocess.run([str(SANDBOX), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        raise SystemExit(f"scripts/asterisk-sandbox start failed:\n{started.stderr}")
    try:
        yield
    finally:
        if not was_running and os.environ.get("ACD_ASTERISK_KEEP") != "1":
            subprocess.run([str(SANDBOX), "stop"], capture_output=True)
