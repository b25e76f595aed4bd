"""The API explorer at /docs works in a real browser with nothing fetched from elsewhere."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Browser, ConsoleMessage, Request

from tests.web.conftest import Site


def test_api_explorer_renders_the_schema_from_this_server_only(
    site: Site, browser: Browser
) -> None:
    # The site's own CSP applies here (the other page tests bypass it to inject axe-core).
    context = browser.new_context()
    try:
        page = context.new_page()
        hosts: set[str] = set()
        problems: list[str] = []

        def on_request(request: Request) -> None:
            hosts.add(urlsplit(request.url).netloc)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                problems.append(message.text)

        page.on("request", on_request)
        page.on("console", on_console)
        page.goto(f"{site.url}/docs")
        # Swagger UI read /openapi.json and drew an operation of ours.
        page.locator('[data-path="/api/device/asks"]').first.wait_for(timeout=20_000)
        assert page.title() == "Porchlight API"
        assert hosts == {urlsplit(site.url).netloc}
        assert problems == []
    finally:
        context.close()


def test_api_explorer_files_are_an_allow_list(site: Site) -> None:
    page = httpx.get(f"{site.url}/docs")
    assert page.status_code == 200
    assert "content-security-policy" in page.headers
    assert "https://" not in page.text
    script = httpx.get(f"{site.url}/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )
    for name in ("index.html", "..%2F__init__.py", "swagger-ui.js"):
        refused = httpx.get(f"{site.url}/docs/assets/{name}")
        assert refused.status_code == 404, name
    assert httpx.get(f"{site.url}/redoc").status_code == 404
