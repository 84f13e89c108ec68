"""The quality page in a real browser (Debian's Chromium through Playwright): a supervisor opens a
recorded call, the recording plays from the same origin with the session cookie, the scorecard is
filled and submitted, and the team's quality figure moves; then the agent acknowledges it.

The service is the real one (tests/web_harness.py: the web service over the demo's simulated PBX,
a real PostgreSQL), run in a thread with its own event loop; calls are seeded as the router records
them, with real WAV files.  Nothing here skips.  The screenshot of the page goes to
/work/notes/quality-page.png (and build/test-artifacts/)."""
from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, expect

from router.quality.scorecard import load_scorecards, score
from tests.test_web_quality import BILLING_CARD, GOOD, QUALITY_CENTRE, TECH_CARD, call_events, insert, write_wav
from tests.browser_harness import chromium, open_page, screenshot, sign_in
from tests.web_harness import TOKENS, start_live, stop_live

pytestmark = pytest.mark.postgres



@dataclass
class Served:
    url: str
    run: str
    directory: Path


@pytest.fixture(scope="module")
def served(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The web service with recorded calls of ann (billing, team red) and bob (tech, team blue)."""
    directory = tmp_path_factory.mktemp("quality")
    (directory / "scorecards").mkdir()
    (directory / "scorecards" / "service.yaml").write_text(textwrap.dedent(BILLING_CARD))
    (directory / "scorecards" / "technical.yaml").write_text(textwrap.dedent(TECH_CARD))
    for name, seconds in (("b1", 3.0), ("b2", 2.0), ("t1", 2.5)):
        write_wav(directory / "recordings" / "2026" / f"{name}.wav", seconds)
    ready = threading.Event()
    box: dict = {}

    async def main() -> None:
        live = await start_live(directory, database_url, centre_text=QUALITY_CENTRE)
        stop = asyncio.Event()
        task = asyncio.create_task(live.pbx.run(stop))
        try:
            t0 = datetime.fromtimestamp(live.pbx.now(), timezone.utc) - timedelta(hours=2)
            await insert(live.web.dsn, live.run, [
                *call_events("b1", "billing", "ann", t0, file="2026/b1.wav", csat=4, duration_s=3.0),
                *call_events("b2", "billing", "ann", t0 + timedelta(minutes=9), caller="+447700900555",
                             file="2026/b2.wav", talk_s=300),
                *call_events("t1", "tech", "bob", t0 + timedelta(minutes=20), caller="+447700900222",
                             file="2026/t1.wav", team="blue", duration_s=2.5),
            ])
            box.update(url=live.url, run=live.run, loop=asyncio.get_running_loop(), stop=stop)
            ready.set()
            await stop.wait()
        finally:
            stop.set()
            await task
            await stop_live(live)

    def serve() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:              # shown by the fixture, not lost in the thread
            box["error"] = error
            ready.set()

    thread = threading.Thread(target=serve, name="quality-web", daemon=True)
    thread.start()
    ready.wait(60)
    if "url" not in box:
        pytest.fail(f"the web service did not start: {box.get('error')!r}")
    try:
        yield Served(box["url"], box["run"], directory)
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


AUDIO_READY = """() => {
    const audio = document.querySelector('#player');
    return audio && audio.readyState >= 1 && audio.duration > 0 ? audio.duration : null;
}"""


def test_a_supervisor_scores_a_recorded_call_and_the_agent_acknowledges(served: Served, browser: Browser) -> None:
    cards, problems = load_scorecards(served.directory / "scorecards", ["billing", "tech", "sales"])
    assert problems == []
    expected = score(cards["service"], GOOD).value

    page, errors = open_page(browser, 1500)
    try:
        sign_in(page, served.url, TOKENS["supervisor"])
        assert page.url == f"{served.url}/"
        page.click("#nav-quality")                               # the dashboard's link
        page.wait_for_url(f"{served.url}/quality")
        expect(page.locator("#recordings tr[data-call]")).to_have_count(3)
        expect(page.locator("#proposals .proposal")).to_have_count(2)
        page.click(".figure-tabs .tab[data-by='teams']")
        red = page.locator("#figures tr[data-key='red'] td.quality")
        expect(red).to_have_text("—")                            # no evaluation yet
        expect(page.locator("#figures tr[data-key='red'] td.evaluations")).to_have_text("0")

        page.click("#recordings tr[data-call='b1'] button[data-open]")
        expect(page.locator("#panel-call")).to_be_visible()
        expect(page.locator("#call-title")).to_have_text("Call b1")
        length = page.wait_for_function(AUDIO_READY).json_value()
        assert abs(length - 3.0) < 0.05, length
        assert page.evaluate("() => document.querySelector('#player').src") == \
            f"{served.url}/api/v1/recordings/b1/audio"
        expect(page.locator("#ivr-path li")).to_have_count(3)    # welcome, menu, keyed 2
        expect(page.locator("#ivr-path li").nth(2)).to_have_text("keyed 2")
        expect(page.locator("#timeline tbody tr")).to_have_count(13)
        expect(page.locator("#card-title")).to_contain_text("Customer service calls")

        # Submitting with a question left out: the server names it, nothing is recorded.
        page.click(".question[data-question='greeting'] label.choice:has(input[value='yes'])")
        page.click("#submit-evaluation")
        expect(page.locator("#eval-result")).to_contain_text("identity")
        expect(page.locator(".toast.error").last).to_contain_text("invalid_answer")
        expect(page.locator(".question.missing")).to_have_count(3)
        errors[:] = [e for e in errors if "status of 422" not in e]

        for question, answer in GOOD.items():
            page.click(f".question[data-question='{question}'] label.choice:has(input[value='{answer}'])")
        page.fill("#comments", "Clear greeting; resolved on the first call.")
        page.click("#submit-evaluation")
        expect(page.locator("#eval-result")).to_have_text(f"Score {expected:.1f} / 100")
        expect(red).to_have_text(f"{expected:.1f}")              # the team's figure moved
        expect(page.locator("#figures tr[data-key='red'] td.evaluations")).to_have_text("1")
        expect(page.locator("#call-evaluations li[data-evaluation]")).to_have_count(1)
        expect(page.locator("#recordings tr[data-call='b1'] td").nth(6)).to_have_text("1")
        page.wait_for_timeout(300)                               # the smooth scroll settles
        page.evaluate("() => document.querySelector('#toasts').replaceChildren()")
        screenshot(page, "quality.png")
        assert errors == []
    finally:
        page.context.close()

    page, errors = open_page(browser, 1500)
    try:
        sign_in(page, served.url, TOKENS["agent"])
        assert page.url == f"{served.url}/agent"
        item = page.locator("#my-evaluations li[data-evaluation]")
        expect(item).to_have_count(1)
        expect(item.locator(".score")).to_have_text(f"{expected:.1f}")
        expect(item.locator(".comment")).to_have_text("Clear greeting; resolved on the first call.")
        item.locator("button[data-action='acknowledge']").click()
        expect(item.locator(".ack")).to_contain_text("acknowledged")
        expect(item.locator(".ack")).not_to_contain_text("not")
        expect(item.locator("button[data-action='acknowledge']")).to_have_count(0)
        page.evaluate("() => document.querySelector('#toasts').replaceChildren()")
        screenshot(page, "agent-evaluations.png")
        page.goto(f"{served.url}/quality")                      # an agent has no quality page
        assert page.url == f"{served.url}/agent"
        assert errors == []
    finally:
        page.context.close()

    answer = requests.get(f"{served.url}/api/v1/evaluations", timeout=10,
                          headers={"Authorization": f"Bearer {TOKENS['supervisor']}"}).json()
    assert [(e["call_id"], e["agent"], e["score"], e["acknowledged"]) for e in answer["evaluations"]] == [
        ("b1", "ann", expected, True)]
