"""Hot reload: calls in progress finish on their version, new calls get the new one, a
broken edit keeps the running version and says why; the mtime watcher and SIGHUP hook."""
from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from router.config import load_config
from router.ivr import Digits, Enqueue, FlowRegistry, PromptDone, sighup_handler, watch

CENTRE = load_config(None)
SAMPLES = Path(__file__).resolve().parent.parent / "ivr_flows"
NOW = datetime(2026, 11, 23, 10, tzinfo=timezone.utc)


@pytest.fixture
def registry(tmp_path: Path) -> FlowRegistry:
    for path in SAMPLES.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    registry = FlowRegistry(tmp_path, known_queues=CENTRE.queues, schedules=CENTRE.schedules,
                            known_skills=CENTRE.skills)
    assert registry.reload(now=1.0).ok
    return registry


def at_main_menu(registry: FlowRegistry, call_id: str):
    session = registry.session("main", call_id=call_id, caller_id="+441632960001", dnis="0800", now=NOW)
    session.start()
    session.handle(PromptDone())
    session.handle(Digits("1"))                   # English; office open: main menu
    assert session.menu_options() == ("1", "2", "3", "0")
    return session


def queue_after(session, key: str) -> str:
    return next(o for o in session.handle(Digits(key)) if isinstance(o, Enqueue)).queue


def edit(registry: FlowRegistry, old: str, new: str) -> None:
    path = registry.directory / "main.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_calls_in_progress_keep_their_version_while_new_calls_get_the_new_one(registry: FlowRegistry):
    first_version = registry.version
    old_call = at_main_menu(registry, "old")
    edit(registry, '"3": sales_queue', '"3": general_queue')
    result = registry.reload(now=2.0)
    assert result.ok and result.version != first_version
    assert [p.message for p in result.problems] == [
        "node 'sales_queue' of flow 'main' is never reached from its start 'welcome'"]   # a warning only
    assert (result.event.type, result.event.ts, result.event.data) == (
        "flow.reloaded", 2.0, {"version": result.version, "ok": True, "errors": []})
    new_call = at_main_menu(registry, "new")
    assert queue_after(old_call, "3") == "sales"
    assert queue_after(new_call, "3") == "general"
    assert old_call.flowset.version == first_version and new_call.flowset.version == result.version


def test_a_broken_edit_keeps_the_running_version_and_reports_why(registry: FlowRegistry):
    running = registry.version
    edit(registry, "queue: sales", "queue: sails")
    result = registry.reload(now=3.0)
    assert not result.ok and result.version == running == registry.version
    errors = [str(p) for p in result.problems if p.severity == "error"]
    assert len(errors) == 1 and errors[0].endswith(
        "error: 'queue' of queue node 'sales_queue': unknown queue 'sails'; did you mean 'sales'?")
    assert result.event.data == {"version": running, "ok": False, "errors": errors}
    assert queue_after(at_main_menu(registry, "during"), "3") == "sales"
    edit(registry, "queue: sails", "queue: sales")
    assert registry.reload().ok


def test_a_session_needs_a_loaded_version(tmp_path: Path):
    with pytest.raises(RuntimeError, match="no valid flows"):
        FlowRegistry(tmp_path).session("main", call_id="c", caller_id="", dnis="", now=NOW)


async def test_the_watcher_reloads_after_a_change(registry: FlowRegistry):
    reloaded: asyncio.Queue = asyncio.Queue()
    watcher = asyncio.create_task(watch(registry, interval_s=0.01, on_reload=reloaded.put_nowait))
    try:
        await asyncio.sleep(0.05)
        assert reloaded.empty()                      # nothing changed since the last reload
        edit(registry, '"3": sales_queue', '"3": general_queue')
        result = await asyncio.wait_for(reloaded.get(), timeout=10)
        assert result.ok and registry.version == result.version
    finally:
        watcher.cancel()


def test_the_sighup_hook_reloads(registry: FlowRegistry):
    results = []
    hook = sighup_handler(registry, results.append)
    edit(registry, '"3": sales_queue', '"3": general_queue')
    hook()
    assert len(results) == 1 and results[0].ok and registry.version == results[0].version
