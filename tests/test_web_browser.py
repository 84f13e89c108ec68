"""The web pages in a real browser: the demo served as users run it (a subprocess, a real database),
driven by Debian's Chromium through Playwright.

Nothing here skips: without Playwright, Chromium or PostgreSQL the tests fail.  Screenshots go to
build/test-artifacts/ for people to look at.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser_harness import chromium, open_page, screenshot, sign_in

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parent.parent
SUPERVISOR_TOKEN = "browser-supervisor-token-01"
VIEWER_TOKEN = "browser-viewer-token-0001"
AGENT_TOKEN = "browser-agent-token-a001-01"
AGENT_ID = "a001"                          # Ann Lee, day team: on shift 08:00-16:00, serves support
QUEUES = {"billing", "support", "sales", "general", "spanish"}
STATE_LABELS = {"available", "ringing", "on call", "wrap-up", "paused", "logged out"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`acd-router serve` in demo mode at 09:00 (agents on shift, calls arriving), 60x real time."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "ACD_DATABASE_URL": database_url,
           "ACD_WEB_TOKENS": f"{SUPERVISOR_TOKEN}:supervisor,{VIEWER_TOKEN}:viewer,{AGENT_TOKEN}:agent:{AGENT_ID}"}
    stderr_path = tmp_path_factory.mktemp("demo") / "stderr.log"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--speed", "60", "--start", "09:00", "--web-port", str(port),
             "--data-dir", str(stderr_path.parent)],                    # its recordings stay in the test's directory
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    announced: list[str] = []
    ready = threading.Event()

    def read_stdout() -> None:                 # keeps draining stdout so the demo never blocks on it
        assert process.stdout is not None
        for line in process.stdout:              # the address comes first, then "ready" once it listens
            if line.startswith("Dashboard: ") and not announced:
                announced.append(line)
            if line.startswith("Dashboard ready") and not ready.is_set():
                ready.set()
        ready.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    try:
        ready.wait(60)
        if not announced:
            process.poll()
            pytest.fail(f"the demo did not announce its dashboard (exit {process.returncode}):\n"
                        f"{stderr_path.read_text()[-4000:]}")
        url = announced[0].split()[1].rstrip("/")
        assert url == f"http://127.0.0.1:{port}", announced[0]
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


LIVE_FIGURES = """() => ({
    states: Object.fromEntries([...document.querySelectorAll('tr[data-agent]')]
        .map(row => [row.dataset.agent, row.querySelector('.state').textContent.trim()])),
    offered: Object.fromEntries([...document.querySelectorAll('tr[data-queue]')]
        .map(row => [row.dataset.queue, row.querySelector('.offered').textContent.trim()])),
})"""

# The agent available for the shortest time: the last one routing (longest idle first) would pick.
AN_AVAILABLE_AGENT = """() => {
    const seconds = text => text.split(':').reduce((total, part) => total * 60 + Number(part), 0);
    const idle = row => seconds(row.querySelector('.since').textContent);
    const rows = [...document.querySelectorAll('tr[data-agent]')]
        .filter(row => row.querySelector('.state').textContent.trim() === 'available')
        .sort((a, b) => idle(a) - idle(b));
    return rows.length ? rows[0].dataset.agent : null;
}"""


def test_dashboard_is_live_and_pauses_and_resumes_an_agent(demo: str, browser: Browser) -> None:
    page, errors = open_page(browser)
    try:
        sign_in(page, demo, SUPERVISOR_TOKEN)
        assert page.url == f"{demo}/"
        expect(page.locator("#live")).to_have_text("live")
        expect(page.locator("tr[data-queue]")).to_have_count(len(QUEUES))
        assert {row.get_attribute("data-queue") for row in page.locator("tr[data-queue]").all()} == QUEUES
        expect(page.locator("tr[data-agent]").first).to_be_visible()
        assert page.locator("tr[data-agent]").count() >= 40
        assert page.locator("tr[data-agent='a001'] .state").text_content().strip() in STATE_LABELS
        expect(page.locator("#intraday svg")).to_have_count(len(QUEUES))
        expect(page.locator("#clock-time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))

        # Updates arrive without a reload: the marker survives while the figures move.
        page.evaluate("() => { window.__noReload = true; }")
        before = page.evaluate(LIVE_FIGURES)
        deadline = time.monotonic() + 20
        while page.evaluate(LIVE_FIGURES) == before:
            assert time.monotonic() < deadline, "the dashboard did not change within 20 s"
            page.wait_for_timeout(250)
        assert page.evaluate("() => window.__noReload") is True

        # Pause an available agent from the page (default reason "break"), then resume it.
        expect(page.locator("tr[data-agent] button[data-action='pause']:visible").first).to_be_visible()
        agent = page.evaluate(AN_AVAILABLE_AGENT)
        assert agent, "no available agent on the board at 09:00"
        row = page.locator(f"tr[data-agent='{agent}']")
        row.locator("button[data-action='pause']").click()
        expect(page.locator("#pause-pop")).to_be_visible()
        expect(page.locator("#pause-reason")).to_have_value("break")
        page.locator("#pause-confirm").click()
        expect(page.locator("#pause-pop")).to_be_hidden()
        # Offered a call meanwhile, it pauses after the call (a few seconds at 60x).
        expect(row.locator(".state")).to_have_text("paused", timeout=40_000)
        expect(row.locator(".reason")).to_contain_text("break")
        expect(row.locator("button[data-action='pause']")).to_be_hidden()
        row.locator("button[data-action='resume']").click()
        expect(row.locator(".state")).not_to_have_text("paused", timeout=15_000)
        expect(row.locator("button[data-action='pause']")).to_be_visible()

        # The time in state ticks in the browser between pushes.
        ticking = row.locator(".since")
        first = ticking.text_content()
        expect(ticking).not_to_have_text(first or "", timeout=5_000)

        # A refusal is shown to the user, never swallowed.
        page.evaluate("() => ACD.api('POST', '/api/v1/agents/nobody/resume', {}).catch(() => null)")
        expect(page.locator(".toast.error").last).to_contain_text("unknown agent")
        expected_404 = [e for e in errors if "status of 404" in e]
        assert len(expected_404) <= 1, errors
        for error in expected_404:
            errors.remove(error)

        # The intraday charts: bars of today's calls at once, the service-level line once the
        # figures have been read back from PostgreSQL (every 15 s), all without a reload.
        expect(page.locator("#intraday .bar-today, #intraday .bar-live").first).to_be_attached()
        expect(page.locator("#intraday .target")).to_have_count(len(QUEUES))
        expect(page.locator("#intraday .sl-dot").first).to_be_attached(timeout=40_000)
        assert page.evaluate("() => window.__noReload") is True
        screenshot(page, "dashboard.png")
        assert errors == []
    finally:
        page.context.close()


SCREEN_POP = """() => {
    const pop = document.querySelector('#pop');
    if (!pop || pop.hidden || pop.offsetParent === null) return null;
    const caller = pop.querySelector('.caller').textContent.trim();
    const queue = pop.querySelector('.queue').textContent.trim();
    return caller && queue ? {caller, queue} : null;
}"""


def test_agent_view_shows_the_screen_pop(demo: str, browser: Browser) -> None:
    page, errors = open_page(browser)
    try:
        sign_in(page, demo, AGENT_TOKEN)
        assert page.url == f"{demo}/agent"
        expect(page.locator("#live")).to_have_text("live")
        expect(page.locator("#agent-name")).to_have_text("Ann Lee")
        expect(page.locator("#state")).to_have_text(re.compile("|".join(STATE_LABELS)))
        expect(page.locator("#my-queues tr[data-queue]")).to_have_count(1)        # a001 serves support only
        expect(page.locator("#btn-logout")).to_be_visible()

        pop = page.wait_for_function(SCREEN_POP, timeout=60_000).json_value()
        assert re.fullmatch(r"\+?\d{6,}", pop["caller"]), pop
        assert pop["queue"] == "Technical support", pop
        disabled, state = page.evaluate(
            "() => [document.querySelector('#btn-wrapup').disabled, document.querySelector('#state').textContent]")
        assert disabled == (state != "wrap-up"), (disabled, state)        # Wrap-up done only in wrap-up

        try:                                   # a picture with the pop on it when there is one
            page.wait_for_function(SCREEN_POP, timeout=10_000)
        except Exception:
            pass
        screenshot(page, "agent.png")
        assert errors == []
    finally:
        page.context.close()


def test_viewer_reads_without_actions_and_signs_out(demo: str, browser: Browser) -> None:
    page, errors = open_page(browser)
    try:
        page.goto(f"{demo}/")
        assert page.url == f"{demo}/login"                          # no session: the sign-in page
        page.fill("#token", "not-a-valid-token-at-all")
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_load_state("domcontentloaded")
        assert page.url == f"{demo}/login?failed=1"
        expect(page.locator("#failed")).to_be_visible()

        sign_in(page, demo, VIEWER_TOKEN)
        assert page.url == f"{demo}/"
        expect(page.locator("#live")).to_have_text("live")
        expect(page.locator("#who")).to_contain_text("viewer")
        expect(page.locator("tr[data-agent]").first).to_be_visible()
        expect(page.locator("tr[data-queue]")).to_have_count(len(QUEUES))
        assert page.locator("#agents button[data-action]:visible").count() == 0
        assert page.locator("#calls .act:visible, #callbacks .act:visible").count() == 0

        page.click(".signout button")
        page.wait_for_load_state("domcontentloaded")
        assert page.url == f"{demo}/login"
        page.goto(f"{demo}/")
        assert page.url == f"{demo}/login"                          # the session is gone
        assert errors == []
    finally:
        page.context.close()
