"""Rules every page keeps, checked over the app's own route table (in-process, no browser):
every form refuses a missing CSRF token, a signed-out browser is sent to the login page, a
signed-in person of another role gets 403, and every response carries the security headers."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.permissions import Role
from app.route_index import route_keys
from tests.server.factories import Community, Person
from tests.server.route_rules import PUBLIC, ROUTE_RULES

HTML = {"Accept": "text/html,application/xhtml+xml"}
NOT_PAGES = ("/api/", "/log/", "/docs", "/openapi.json", "/healthz", "/static/")


def _is_page(path: str) -> bool:
    return not path.startswith(NOT_PAGES)


PAGE_RULES = {key: rule for key, rule in ROUTE_RULES.items() if _is_page(key[1])}
ROLE_PAGES = sorted(k for k, r in PAGE_RULES.items() if k[0] == "GET" and r != PUBLIC)
FORMS = sorted(k for k in PAGE_RULES if k[0] == "POST")


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_the_page_table_covers_every_page_route(app: FastAPI) -> None:
    served = {key for key in route_keys(app) if _is_page(key[1])}
    assert served == set(PAGE_RULES)
    assert len(ROLE_PAGES) >= 15 and len(FORMS) >= 15


class Browsers:
    """One signed-in cookie session (its own client) per role."""

    def __init__(self, app: FastAPI, community: Community) -> None:
        self.people: dict[Role, Person] = {}
        self.clients: dict[Role, TestClient] = {}
        self.csrf: dict[Role, str] = {}
        for role in Role:
            person = community.person(role)
            client = TestClient(app, follow_redirects=False)
            self.csrf[role] = community.login(person, client)
            self.people[role], self.clients[role] = person, client


@pytest.fixture
def browsers(app: FastAPI, community: Community) -> Iterator[Browsers]:
    yield Browsers(app, community)


@pytest.mark.parametrize("key", ROLE_PAGES, ids=lambda k: k[1])
def test_signed_out_browser_is_sent_to_login(key: tuple[str, str], app: FastAPI) -> None:
    path = _concrete(key[1])
    with TestClient(app, follow_redirects=False) as anonymous:
        response = anonymous.get(path, headers=HTML)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=")
        # A script (no HTML in Accept) gets the status, not a redirect.
        assert anonymous.get(path).status_code == 401


def test_other_roles_get_403_on_every_role_page(browsers: Browsers) -> None:
    checked = 0
    for method, template in ROLE_PAGES:
        allowed = PAGE_RULES[(method, template)]
        assert isinstance(allowed, frozenset)
        for role, client in browsers.clients.items():
            response = client.get(_concrete(template), headers=HTML)
            if role in allowed:
                assert response.status_code not in (401, 403), (role, template)
            else:
                assert response.status_code == 403, (role, template, response.status_code)
                assert "Not allowed" in response.text
                checked += 1
    assert checked >= 4 * len(ROLE_PAGES) - len(ROLE_PAGES)


@pytest.mark.parametrize("key", FORMS, ids=lambda k: k[1])
def test_every_form_refuses_a_missing_csrf_token(
    key: tuple[str, str], browsers: Browsers, community: Community
) -> None:
    _, template = key
    path = _concrete(template)
    rule = PAGE_RULES[key]
    before = community.counts()
    # Plausible form fields, so nothing but the missing token can be the reason for refusal.
    fields = {
        "username": "someone",
        "password": "lantern-quiet-harbour-9",
        "code": "inv_x",
        "password_again": "lantern-quiet-harbour-9",
        "role": "resident",
        "decision": "approve",
        "reason": "fine",
        "latitude": "51.5",
        "longitude": "0.1",
        "name": "Agency",
        "jurisdiction": "Here",
        "recipient": "age1x",
    }
    if rule == PUBLIC:
        with TestClient(browsers.clients[Role.admin].app, follow_redirects=False) as fresh:
            form = fresh.get(path, headers=HTML)
            assert form.status_code == 200
            response = fresh.post(path, data=fields, headers=HTML)  # cookie set, no field
            assert response.status_code == 403
            assert "CSRF" in response.text
            wrong = fresh.post(path, data={**fields, "csrf_token": "forged"}, headers=HTML)
            assert wrong.status_code == 403
    else:
        assert isinstance(rule, frozenset)
        role = Role.admin if rule == frozenset(Role) else min(rule)
        client = browsers.clients[Role(role)]
        response = client.post(path, data=fields, headers=HTML)
        assert response.status_code == 403, response.text
        assert "CSRF" in response.text
        wrong = client.post(path, data={**fields, "csrf_token": "forged"}, headers=HTML)
        assert wrong.status_code == 403
    after = community.counts()
    # Refused before anything happened: no row anywhere, no log entry. (Checkpoints are
    # published on a timer, so log_checkpoints may grow meanwhile.)
    before.pop("log_checkpoints")
    after.pop("log_checkpoints")
    assert after == before


def test_every_rendered_form_carries_the_token(browsers: Browsers) -> None:
    forms = 0
    for method, template in ROLE_PAGES:
        allowed = PAGE_RULES[(method, template)]
        assert isinstance(allowed, frozenset)
        role = sorted(allowed)[0]
        page = browsers.clients[role].get(_concrete(template), headers=HTML)
        for form in re.findall(r"<form[^>]*method=\"post\".*?</form>", page.text, re.S):
            forms += 1
            assert f'name="csrf_token" value="{browsers.csrf[role]}"' in form, form
    assert forms >= 5


def test_security_headers(browsers: Browsers, client: TestClient) -> None:
    for response in (
        client.get("/transparency", headers=HTML),
        browsers.clients[Role.admin].get("/admin/people", headers=HTML),
        client.get("/api/me"),
    ):
        csp = response.headers["content-security-policy"]
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        for directive in (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ):
            assert directive in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "camera=()" in response.headers["permissions-policy"]
    page = client.get("/promises", headers=HTML).text
    # No inline script or style anywhere for the CSP to have to allow.
    assert "<script" not in page and "style=" not in page and "<style" not in page


def test_login_never_redirects_off_site(community: Community, app: FastAPI) -> None:
    person = community.person(Role.auditor)
    with TestClient(app, follow_redirects=False) as browser:
        form = browser.get("/login", headers=HTML)
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        response = browser.post(
            "/login",
            data={
                "username": person.username,
                "password": person.password,
                "csrf_token": token.group(1),
                "next": "//evil.example/phish",
            },
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/audit/requests"
        assert "HttpOnly" in response.headers["set-cookie"]
        assert "SameSite=lax" in response.headers["set-cookie"].replace("samesite", "SameSite")


def test_static_files_only_by_exact_name(client: TestClient) -> None:
    assert client.get("/static/site.css").status_code == 200
    assert client.get("/static/..%2Fweb%2Frender.py").status_code == 404
    assert client.get("/static/render.py").status_code == 404
