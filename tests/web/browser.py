"""Browser helpers for the page tests: Debian's Chromium via Playwright, axe-core, screenshots.

axe-core comes from the npm registry (`make test` installs it into .cache/npm); it is injected
with Playwright into a context created with `bypass_csp=True`, because the pages' own CSP
rightly refuses any script that is not served by the app.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, ViewportSize

REPO = Path(__file__).resolve().parents[2]
AXE_JS = REPO / ".cache" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("PORCHLIGHT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Where screenshots of each journey's final page go (also copied into the test's tmp_path).
SCREENSHOT_DIR = Path(os.environ.get("PORCHLIGHT_TEST_OUTPUT", REPO / "test-output")) / "web"
# A small phone: every journey runs at this width.
PHONE: ViewportSize = {"width": 360, "height": 780}


def require_browser() -> None:
    """Skip locally without Chromium or axe-core; fail under CI, where `make test` installs both."""
    missing = [str(p) for p in (Path(CHROMIUM), AXE_JS) if not p.exists()]
    if missing:
        message = f"browser tests need {', '.join(missing)} (run `make test`)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations on the current page (WCAG 2 A/AA rules)."""
    page.add_script_tag(path=str(AXE_JS))
    found: list[dict[str, Any]] = page.evaluate(
        """async () => {
            const result = await axe.run(document, {
                runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa',
                                                 'best-practice']},
                resultTypes: ['violations'],
            });
            return result.violations
                .filter(v => v.impact === 'serious' || v.impact === 'critical')
                .map(v => ({id: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
        }"""
    )
    return found


class Journey:
    """Steps through pages; every page visited is axe-scanned, the last one screenshotted."""

    def __init__(self, page: Page, base_url: str, name: str, tmp_path: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.name = name
        self.tmp_path = tmp_path
        self.scanned: list[str] = []

    def check(self) -> None:
        """Scan the page now showing (call after each navigation or form submission)."""
        violations = axe_violations(self.page)
        where = self.page.url.removeprefix(self.base_url)
        assert violations == [], f"axe on {where}: {violations}"
        self.scanned.append(where)

    def goto(self, path: str) -> None:
        response = self.page.goto(self.base_url + path)
        assert response is not None and response.ok, f"{path}: {response and response.status}"
        self.check()

    def sign_in(self, username: str, password: str) -> None:
        self.goto("/login")
        self.page.get_by_label("User name").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_load_state()
        assert "/login" not in self.page.url, self.page.content()
        self.check()

    def screenshot(self) -> Path:
        """Full-page screenshot of the final page, in tmp_path and in test-output/web."""
        path = self.tmp_path / f"{self.name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOT_DIR / path.name)
        return path
