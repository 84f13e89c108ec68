"""The simulator's full event streams, pinned: a change meant to make the engine or the
simulator faster must not change one event (type, time, ids or a data field) of a seeded run.

Digests of whole streams, taken before the speed work of issue 14 (the sample centre with its
IVR, survey, overflow and call-backs, and vs_simpy's M/M/14 centre).  A change that MEANS to
change what happens (a new event field, another routing decision, an edited sample centre)
updates them: `python -m tests.test_sim_golden` prints the current ones.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from router.config.loader import load_config
from router.ivr.registry import load_flowset
from router.sim.simulator import Simulator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import vs_simpy  # noqa: E402

GOLDEN = {
    "sample-4h-1": "7198e58356a79865b24eb7ee0e52024993953292a4aa72925a30da93136d7f99",
    "sample-4h-2": "3da57e63543cd43cbbd51c87aa4ac877215a9126b8907babc07411b9503ca992",
    "mm14-5000-1": "1c1b9e4c6e1046c5a9b6811fc4a85b0612382f6e92bc66ffeddebe981a5dab82",
    "mm14-5000-7": "dcfe2b5377d371acecdbd69173439dcd8abe415447b7bec11fa48ebc1550b4a4",
}


def _simulator(name: str) -> Simulator:
    kind, size, seed = name.split("-")
    if kind == "sample":
        sample = load_config(None)
        return Simulator(sample, hours=float(size.removesuffix("h")), seed=int(seed), flowset=load_flowset(sample))
    model, hours = vs_simpy.centre(int(size))
    return Simulator(model, hours=hours, seed=int(seed))


def stream_digest(name: str) -> str:
    """sha256 of every event of the run, one line each: (ts, type, call_id, queue, agent, data by key)."""
    sim, digest = _simulator(name), hashlib.sha256()
    while not sim.done:
        for e in sim.run(50_000):
            line = repr((e.ts, e.type, e.call_id, e.queue, e.agent, sorted(e.data.items(), key=lambda kv: kv[0])))
            digest.update(line.encode() + b"\n")
    assert sim.refused == 0
    return digest.hexdigest()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_event_stream_is_unchanged(name):
    assert stream_digest(name) == GOLDEN[name]


if __name__ == "__main__":
    for run in GOLDEN:
        print(f'    "{run}": "{stream_digest(run)}",')
