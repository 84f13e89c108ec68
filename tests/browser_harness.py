"""What the browser tests share: Debian's Chromium driven by Playwright, pages that collect
JavaScript errors, signing in with a token, and screenshots under build/test-artifacts/ for
people to look at.  Nothing here skips: without Playwright or Chromium the tests fail."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium (root needs --no-sandbox)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Browser, width: int = 1600) -> tuple[Page, list[str]]:
    """A page in a fresh context (its own cookies), recording JavaScript errors."""
    context = browser.new_context(viewport={"width": width, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text} ({message.location.get('url', '')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    return page, errors


def sign_in(page: Page, base: str, token: str) -> None:
    """Sign in through the login form; the token ends up in neither the URL nor the page's storage."""
    page.goto(f"{base}/login")
    expect(page.locator("#failed")).to_be_hidden()
    page.fill("#token", token)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_load_state("domcontentloaded")
    assert "token" not in page.url and token not in page.url
    assert token not in page.evaluate("() => JSON.stringify(window.localStorage)")


def screenshot(page: Page, name: str) -> Path:
    """A full-page picture from the top (the sticky header at the top of it)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 30_000, path
    return path
