"""Versioned flow sets: reload on change, keep the running version on error.

Theory of operation
-------------------
`FlowRegistry` owns the flow directory.  `reload()` checks every file again
(`router.ivr.validate.check_flows`); a set without errors becomes `current`,
a set with errors is refused and the running version stays, and either way
the result carries a ``flow.reloaded`` event (data: version running after the
reload, ok, errors) for the store.  Sessions hold the `FlowSet` they started
with, so a call in progress finishes on its version while new calls get the
new one; nothing is ever mutated in place.

Triggers: `watch()` polls the files' modification times and sizes (no extra
dependency; an editor's save is seen within `interval_s`), and
`sighup_handler()` gives the function the service installs with
``loop.add_signal_handler(signal.SIGHUP, ...)``.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from router.config.model import Centre, Schedule
from router.events import Event
from router.ivr.model import FlowSet
from router.ivr.session import FlowSession
from router.ivr.validate import check_flows
from router.yamlsrc import Problem


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    version: str | None          # the version running after this reload
    problems: tuple[Problem, ...]
    event: Event


class FlowRegistry:
    def __init__(self, directory: str | Path, *, known_queues: Iterable[str] | None = None,
                 schedules: Mapping[str, Schedule] | None = None,
                 known_skills: Iterable[str] | None = None) -> None:
        self.directory = Path(directory)
        self.known_queues = list(known_queues) if known_queues is not None else None
        self.schedules = dict(schedules) if schedules is not None else None
        self.known_skills = list(known_skills) if known_skills is not None else None
        self.current: FlowSet | None = None
        self._signature: tuple[Any, ...] | None = None

    @property
    def version(self) -> str | None:
        return self.current.version if self.current is not None else None

    def reload(self, now: float | None = None) -> ReloadResult:
        """Check the directory again; switch to it only if it has no errors."""
        self._signature = self.signature()
        flowset, problems = check_flows(self.directory, known_queues=self.known_queues,
                                        schedules=self.schedules, known_skills=self.known_skills)
        if flowset is not None:
            self.current = flowset
        errors = problems.errors
        event = Event(time.time() if now is None else now, "flow.reloaded",
                      data={"version": self.version, "ok": flowset is not None,
                            "errors": [str(problem) for problem in errors]})
        return ReloadResult(flowset is not None, self.version, tuple(problems), event)

    def session(self, flow: str, *, call_id: str, caller_id: str, dnis: str, now: datetime,
                **options: Any) -> FlowSession:
        """A new call on the current version."""
        if self.current is None:
            raise RuntimeError(f"no valid flows loaded from {self.directory}")
        return FlowSession(self.current, flow, call_id=call_id, caller_id=caller_id, dnis=dnis, now=now,
                           **options)

    def signature(self) -> tuple[Any, ...]:
        """Names, sizes and modification times of the directory's YAML files."""
        try:
            entries = sorted(self.directory.iterdir())
        except OSError:
            return ()
        found = []
        for path in entries:
            if path.suffix in (".yaml", ".yml"):
                try:
                    stat = path.stat()
                except OSError:
                    continue
                found.append((path.name, stat.st_mtime_ns, stat.st_size))
        return tuple(found)

    def changed(self) -> bool:
        return self.signature() != self._signature


async def watch(registry: FlowRegistry, interval_s: float = 2.0,
                on_reload: Callable[[ReloadResult], None] | None = None) -> None:
    """Reload whenever a flow file changes; runs until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        if registry.changed():
            result = registry.reload()
            if on_reload is not None:
                on_reload(result)


def sighup_handler(registry: FlowRegistry,
                   on_reload: Callable[[ReloadResult], None] | None = None) -> Callable[[], None]:
    """The callback for ``loop.add_signal_handler(signal.SIGHUP, ...)``: reload now."""
    def reload() -> None:
        result = registry.reload()
        if on_reload is not None:
            on_reload(result)
    return reload


def flows_directory(centre: Centre) -> Path:
    """Where a centre's flows live: its `flows:` (relative to the config file), else
    ./ivr_flows.  The packaged sample centre names its own flows, shipped beside it."""
    if centre.flows:
        return (Path(centre.source).parent / centre.flows).resolve()
    return Path("ivr_flows")


def load_flowset(centre: Centre, directory: Path | None = None) -> FlowSet:
    """The centre's flows, validated against its queues, schedules and skills.

    Raises FlowError with every problem when they do not validate."""
    directory = directory or flows_directory(centre)
    flowset, problems = check_flows(directory, known_queues=list(centre.queues),
                                    schedules=centre.schedules, known_skills=list(centre.skills))
    if flowset is None:
        raise FlowError(problems.errors or [Problem(str(directory), 1, 1, "error", "no flows found")])
    return flowset


class FlowError(ValueError):
    """Flows that do not validate; `problems` holds every error."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.col))
        super().__init__("\n".join(str(p) for p in self.problems))
