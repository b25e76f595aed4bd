"""A live server on loopback with a seeded community, and one Chromium for the page tests.

SQLite only (the pages call the same services the API tests run on both databases). The
community is built in-process through the real services on the same database file the live
server (a separate uvicorn process) serves.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from tests.server.factories import Community
from tests.server.live import live_server
from tests.web.browser import CHROMIUM, CHROMIUM_ARGS, PHONE, require_browser

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright


@dataclass
class Site:
    url: str
    app: FastAPI
    community: Community
    data_dir: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A migrated SQLite database, served by uvicorn, seeded through an in-process app."""
    root = tmp_path_factory.mktemp("web")
    database_url = f"sqlite:///{root / 'porchlight.sqlite3'}"
    upgrade(database_url)
    settings = Settings(
        data_dir=root / "data",
        database_url=database_url,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
    )
    app = create_app(settings)
    with TestClient(app) as client, live_server(database_url, root / "data") as url:
        yield Site(url, app, Community(app, client), root / "data")
    app.state.engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Per module, not per session: Playwright's sync API keeps an event loop running in the
    # main thread while it is open, and tests of other files that the same xdist worker runs
    # next call asyncio.run() there.
    require_browser()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    # bypass_csp lets the test inject axe-core; the app's CSP is checked separately.
    ctx = browser.new_context(viewport=PHONE, bypass_csp=True, accept_downloads=True)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()
