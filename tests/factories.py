"""Small centres built from the config dataclasses, for engine and simulator tests."""
from __future__ import annotations

import os
from dataclasses import replace
from types import ModuleType

import pytest

from router.config.model import Agent, Centre, OverflowStep, Queue, Skill


def centre(agents: dict[str, dict[str, int]], queues: list[Queue],
           skills: tuple[str, ...] = ("en", "es", "billing", "tech", "sales", "vip")) -> Centre:
    return Centre(
        source="<test>",
        skills={s: Skill(s, s) for s in skills},
        agents={a: Agent(a, a.title(), f"Local/{a}@agents", sk, team="red" if i % 2 == 0 else "blue")
                for i, (a, sk) in enumerate(agents.items())},
        queues={q.id: q for q in queues},
    )


def queue(id: str, skills: dict[str, int] | None = None, **kw) -> Queue:
    defaults = dict(name=id.title(), skills=skills or {}, ring_timeout_s=15.0, wrap_up_s=10.0)
    defaults.update(kw)
    return Queue(id=id, **defaults)


def step(**kw) -> OverflowStep:
    return OverflowStep(**kw)


def with_queue(c: Centre, q: Queue) -> Centre:
    return replace(c, queues={**c.queues, q.id: q})


def compiled_matcher_module() -> ModuleType:
    """router.engine.cmatcher; a skip where it is not built, a failure under ACD_REQUIRE_COMPILED=1 (CI)."""
    try:
        from router.engine import cmatcher
    except ImportError as exc:
        if os.environ.get("ACD_REQUIRE_COMPILED") == "1":
            pytest.fail(f"ACD_REQUIRE_COMPILED=1 but router.engine.cmatcher does not import: {exc}")
        pytest.skip(f"compiled matcher not built: {exc}")
    return cmatcher
