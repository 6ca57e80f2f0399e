"""Playwright on Debian's Chromium against pytest-django's live server.

Never run `playwright install`: the tests drive the system's /usr/bin/chromium (Debian package
`chromium`, installed by .ci/run). Without it they skip, unless LESIONSEARCH_REQUIRE_BROWSER is
set (CI sets it), in which case they fail.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
LAPTOP = {"width": 1366, "height": 768}
TABLET = {"width": 768, "height": 1024}


def rgb(colour: str) -> str:
    """'#d77d00' -> 'rgb(215, 125, 0)', as getComputedStyle reports colours."""
    value = colour.lstrip("#")
    return "rgb({}, {}, {})".format(*(int(value[i:i + 2], 16) for i in (0, 2, 4)))


def sign_in(page, user) -> None:
    """Sign in through the login form (the test users' password is ``pw-<username>``)."""
    from playwright.sync_api import expect

    page.goto("/accounts/login/")
    page.get_by_label("User name").fill(user.username)
    page.get_by_label("Password").fill(f"pw-{user.username}")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The browser binary, or a skip (a failure where LESIONSEARCH_REQUIRE_BROWSER is set).

    Session-scoped so that pytest checks it before the expensive session fixtures (the tiny
    models) a skipped test would otherwise still build.
    """
    if not CHROMIUM.exists():
        reason = f"Chromium is not installed at {CHROMIUM} (Debian package `chromium`); browser tests need it"
        if os.environ.get("LESIONSEARCH_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
def browser(chromium):
    """Chromium, started per test: once Playwright's event loop runs, Django's connection
    handler (context-local under a running loop) hands out connection objects that lack the
    test database's serialized contents, so a browser kept across tests would break
    ``serialized_rollback`` in the next one."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread, which Django's ORM takes for an
    # async context; the test's own ORM calls are synchronous, so allow them while it runs.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            yield launched
            launched.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def open_page(browser, live_server):
    """Opens pages in fresh browser contexts at laptop size (``javascript=False`` for the
    no-script fallback); the test fails on any uncaught script error in them."""
    contexts = []
    script_errors: list[str] = []

    def open_(*, javascript: bool = True):
        context = browser.new_context(viewport=LAPTOP, base_url=live_server.url, java_script_enabled=javascript)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not script_errors, f"script errors in the page: {script_errors}"


@pytest.fixture
def page(open_page):
    return open_page()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go (var/test-artifacts/, ignored by git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
