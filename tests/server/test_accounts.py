"""Accounts: invites, passwords, logins (throttled), cookies and CSRF, API tokens, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.accounts import service as accounts
from app.deps import SESSION_COOKIE
from app.errors import LoginFailed, TooManyAttempts
from app.permissions import Role
from app.settings import Settings
from porchlight.client import ApiError, PorchlightClient
from tests.server.factories import Clock, Community
from tests.server.live import live_server

STRONG = "violet-lantern-harbour-7"


def _invite(community: Community, admin_role: Role = Role.admin, **body: object) -> str:
    admin = community.person(admin_role)
    response = community.client.post(
        "/api/invites", headers=community.auth(admin), json={"role": "resident", **body}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["code"])


def _error(response: object) -> str:
    body = response.json()  # type: ignore[attr-defined]
    assert isinstance(body["message"], str) and body["message"]
    return str(body["message"])


def test_invite_creates_exactly_one_account(community: Community, client: TestClient) -> None:
    code = _invite(community)
    before = community.counts()
    response = client.post(
        "/api/invites/accept", json={"code": code, "username": "dana", "password": STRONG}
    )
    assert response.status_code == 201, response.text
    assert response.json()["role"] == "resident"
    after = community.counts()
    assert after["users"] == before["users"] + 1
    # user:create + invite:accept, in the same transaction as the account.
    assert after["log_entries"] == before["log_entries"] + 2

    again = community.counts()
    reused = client.post(
        "/api/invites/accept", json={"code": code, "username": "erin", "password": STRONG}
    )
    assert reused.status_code == 409
    assert "already been used" in _error(reused)
    assert community.counts() == again


def test_requester_invite_names_an_agency(community: Community, client: TestClient) -> None:
    admin = community.person(Role.admin)
    missing = client.post("/api/invites", headers=community.auth(admin), json={"role": "requester"})
    assert missing.status_code == 422
    assert "agency" in _error(missing)
    agency_id = community.agency()
    made = client.post(
        "/api/invites",
        headers=community.auth(admin),
        json={"role": "requester", "agency_id": agency_id},
    )
    assert made.status_code == 201
    person = client.post(
        "/api/invites/accept",
        json={"code": made.json()["code"], "username": "officer1", "password": STRONG},
    )
    assert person.status_code == 201
    assert person.json()["agency_id"] == agency_id


def test_expired_invite_is_refused(
    community: Community, client: TestClient, clock: Clock, settings: Settings
) -> None:
    code = _invite(community)
    clock.advance(hours=settings.invite_hours + 1)
    before = community.counts()
    response = client.post(
        "/api/invites/accept", json={"code": code, "username": "late", "password": STRONG}
    )
    assert response.status_code == 409
    assert "expired" in _error(response)
    assert community.counts() == before


def test_unknown_invite_code(community: Community, client: TestClient) -> None:
    before = community.counts()
    response = client.post(
        "/api/invites/accept", json={"code": "inv_nope", "username": "someone", "password": STRONG}
    )
    assert response.status_code == 404
    assert community.counts() == before


def test_duplicate_user_name_is_refused(community: Community, client: TestClient) -> None:
    existing = community.person(Role.resident)
    code = _invite(community)
    before = community.counts()
    response = client.post(
        "/api/invites/accept",
        json={"code": code, "username": existing.username, "password": STRONG},
    )
    assert response.status_code == 409
    assert "taken" in _error(response)
    assert community.counts() == before
    # The invite was not used up by the failed attempt.
    ok = client.post(
        "/api/invites/accept", json={"code": code, "username": "fresh-name", "password": STRONG}
    )
    assert ok.status_code == 201


def test_weak_passwords_are_refused(community: Community, client: TestClient) -> None:
    code = _invite(community)
    before = community.counts()
    for password, reason in [
        ("short-pw1", "at least 12"),
        ("password1234", "too common"),
        ("aaaaaaaaaaaaaaaa", "too common"),
        ("frankie-frankie-99", "user name"),
    ]:
        response = client.post(
            "/api/invites/accept", json={"code": code, "username": "frankie", "password": password}
        )
        assert response.status_code == 422, password
        assert reason in _error(response)
    assert community.counts() == before


def test_malformed_and_oversized_bodies(
    community: Community, client: TestClient, settings: Settings
) -> None:
    code = _invite(community)
    before = community.counts()
    cases = [
        client.post(
            "/api/invites/accept",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        ),
        client.post("/api/invites/accept", json={"code": code}),
        client.post(
            "/api/invites/accept", json={"code": code, "username": "Bad Name!", "password": STRONG}
        ),
        client.post(
            "/api/invites/accept",
            json={"code": code, "username": "ok-name", "password": STRONG, "role": "admin"},
        ),
    ]
    for response in cases:
        assert response.status_code == 422, response.text
        _error(response)
    huge = json.dumps({"code": code, "username": "big", "password": "x" * settings.max_body_bytes})
    too_large = client.post(
        "/api/invites/accept", content=huge.encode(), headers={"Content-Type": "application/json"}
    )
    assert too_large.status_code == 413
    assert "larger than" in _error(too_large)
    assert community.counts() == before


def test_login_sets_a_safe_cookie_and_csrf_guards_writes(
    community: Community, client: TestClient
) -> None:
    resident = community.person(Role.resident)
    response = client.post(
        "/api/session", json={"username": resident.username, "password": resident.password}
    )
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
    assert "Secure" not in cookie  # settings.tls is off in tests, and this came over http
    csrf = response.json()["csrf_token"]
    assert client.get("/api/me").json()["username"] == resident.username
    before = community.counts()
    refused = client.post("/api/tokens", json={"name": "laptop"})
    assert refused.status_code == 403
    assert "CSRF" in _error(refused)
    wrong = client.post("/api/tokens", json={"name": "laptop"}, headers={"X-CSRF-Token": "x"})
    assert wrong.status_code == 403
    assert community.counts() == before
    ok = client.post("/api/tokens", json={"name": "laptop"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201
    out = client.delete("/api/session", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 204
    client.cookies.clear()
    assert client.get("/api/me").status_code == 401


def test_secure_cookie_behind_tls(settings: Settings, clock: Clock) -> None:
    from app.main import create_app

    app = create_app(settings.model_copy(update={"tls": True}), clock=clock)
    with TestClient(app) as client:
        person = Community(app, client).person(Role.auditor)
        response = client.post(
            "/api/session", json={"username": person.username, "password": person.password}
        )
        assert "Secure" in response.headers["set-cookie"]
    app.state.engine.dispose()


def test_a_login_over_https_gets_a_secure_cookie_without_the_tls_setting(
    community: Community, app: FastAPI
) -> None:
    """PORCHLIGHT_TLS defaults to off (for `make run` on localhost); an operator who forgot it
    behind an HTTPS proxy sent session cookies a browser would also send over plain HTTP."""
    person = community.person(Role.resident)
    with TestClient(app, base_url="https://porchlight.example") as secure_client:
        response = secure_client.post(
            "/api/session", json={"username": person.username, "password": person.password}
        )
        assert response.status_code == 200
        assert "Secure" in response.headers["set-cookie"]
        page = secure_client.get("/login", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert all("Secure" in c for c in page.headers.get_list("set-cookie"))


def test_wrong_passwords_are_logged_then_throttled(
    community: Community, client: TestClient, settings: Settings, clock: Clock
) -> None:
    person = community.person(Role.reviewer)
    before = community.counts()
    for _ in range(settings.login_max_failures_per_account):
        response = client.post(
            "/api/session", json={"username": person.username, "password": "wrong-password!"}
        )
        assert response.status_code == 401
        assert _error(response) == "wrong user name or password"
    throttled = client.post(
        "/api/session", json={"username": person.username, "password": person.password}
    )
    assert throttled.status_code == 429
    assert "too many failed logins" in _error(throttled)
    after = community.counts()
    assert after["web_sessions"] == before["web_sessions"]
    assert after["users"] == before["users"]
    # Each failure and the throttled attempt are on the log.
    failures = settings.login_max_failures_per_account
    assert after["log_entries"] == before["log_entries"] + failures + 1
    clock.advance(minutes=settings.login_window_minutes + 1)
    ok = client.post(
        "/api/session", json={"username": person.username, "password": person.password}
    )
    assert ok.status_code == 200


def test_wrong_passwords_from_elsewhere_do_not_lock_a_person_out(
    community: Community, settings: Settings
) -> None:
    """Anyone who knows a user name could send a few wrong passwords and keep its owner out
    (429 for the right password from any address). Now the account's limit closes it only to
    addresses that have failed on it."""
    person = community.person(Role.reviewer)
    hasher = community.app.state.password_hasher
    now = community.now()

    def attempt(password: str, address: str) -> Exception | None:
        with community.session() as session:  # commits, as the route does for a failure
            try:
                accounts.login(session, hasher, settings, person.username, password, address, now)
            except (LoginFailed, TooManyAttempts) as error:
                return error
        return None

    attacker, owner, other = "198.51.100.7", "203.0.113.9", "192.0.2.44"
    for _ in range(settings.login_max_failures_per_account):
        assert isinstance(attempt("wrong-password!", attacker), LoginFailed)
    # The attacker's address is closed, even to the right password.
    assert isinstance(attempt(person.password, attacker), TooManyAttempts)
    # The owner, from an address that has not failed, gets in (429 before).
    assert attempt(person.password, owner) is None
    # A guess from a fresh address is one guess: that address is closed after it.
    assert isinstance(attempt("another-guess!", other), LoginFailed)
    assert isinstance(attempt(person.password, other), TooManyAttempts)


def test_throttled_per_address_across_accounts(
    community: Community, client: TestClient, settings: Settings
) -> None:
    target = community.person(Role.admin)
    for i in range(settings.login_max_failures_per_address):
        response = client.post(
            "/api/session", json={"username": f"guess{i}", "password": "wrong-password!"}
        )
        assert response.status_code == 401
    refused = client.post(
        "/api/session", json={"username": target.username, "password": target.password}
    )
    assert refused.status_code == 429


def test_unknown_user_and_wrong_password_look_alike(
    community: Community, client: TestClient
) -> None:
    person = community.person(Role.resident)
    unknown = client.post("/api/session", json={"username": "nobody", "password": "x" * 12})
    wrong = client.post("/api/session", json={"username": person.username, "password": "x" * 12})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()


def test_api_tokens_are_shown_once_and_revocable(community: Community, client: TestClient) -> None:
    person = community.person(Role.auditor)
    created = client.post("/api/tokens", headers=community.auth(person), json={"name": "cli"})
    assert created.status_code == 201
    secret = created.json()["token"]
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/me", headers=headers).json()["role"] == "auditor"
    listed = client.get("/api/tokens", headers=headers).json()
    assert all("token" not in item for item in listed)
    # The token is scoped to its owner's role: an auditor's token cannot create invites.
    assert client.post("/api/invites", headers=headers, json={"role": "admin"}).status_code == 403
    revoked = client.delete(f"/api/tokens/{created.json()['id']}", headers=community.auth(person))
    assert revoked.status_code == 200
    assert client.get("/api/me", headers=headers).status_code == 401
    again = client.delete(f"/api/tokens/{created.json()['id']}", headers=community.auth(person))
    assert again.status_code == 409
    other = community.person(Role.auditor)
    theirs = client.delete(f"/api/tokens/{created.json()['id']}", headers=community.auth(other))
    assert theirs.status_code == 404


def test_disabled_person_is_locked_out(community: Community, client: TestClient) -> None:
    admin = community.person(Role.admin)
    person = community.person(Role.reviewer)
    assert client.get("/api/me", headers=community.auth(person)).status_code == 200
    response = client.post(f"/api/people/{person.id}/disable", headers=community.auth(admin))
    assert response.status_code == 200
    assert response.json()["disabled_at"] is not None
    assert client.get("/api/me", headers=community.auth(person)).status_code == 401
    login = client.post(
        "/api/session", json={"username": person.username, "password": person.password}
    )
    assert login.status_code == 401
    before = community.counts()
    self_disable = client.post(f"/api/people/{admin.id}/disable", headers=community.auth(admin))
    assert self_disable.status_code == 409
    assert (
        client.post("/api/people/999999/disable", headers=community.auth(admin)).status_code == 404
    )
    assert community.counts() == before


def test_csrf_token_in_a_form_field(community: Community, client: TestClient) -> None:
    person = community.person(Role.resident)
    csrf = community.login(person)
    refused = client.request("DELETE", "/api/session", data={"csrf_token": "wrong"})
    assert refused.status_code == 403
    ok = client.request("DELETE", "/api/session", data={"csrf_token": csrf})
    assert ok.status_code == 204


def test_unknown_paths_and_methods_answer_in_the_same_shape(client: TestClient) -> None:
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["message"] == "Not Found"
    wrong = client.put("/api/session")
    assert wrong.status_code == 405


def test_sessions_expire(
    community: Community, client: TestClient, clock: Clock, settings: Settings
) -> None:
    person = community.person(Role.resident)
    community.login(person)
    assert client.get("/api/me").status_code == 200
    clock.advance(hours=settings.session_hours, seconds=1)
    assert client.get("/api/me").status_code == 401


@pytest.mark.sqlite_only
def test_shared_client_creates_a_token_over_http(
    community: Community, database_url: str, tmp_path: Path
) -> None:
    person = community.person(Role.auditor)
    with live_server(database_url, tmp_path / "data") as url:
        with PorchlightClient(url) as anonymous:
            token = anonymous.create_token(person.username, person.password, "laptop")
            with pytest.raises(ApiError) as refused:
                anonymous.create_token(person.username, "wrong-password!", "x")
            assert refused.value.status_code == 401
            assert refused.value.message == "wrong user name or password"
        with PorchlightClient(url, token=token) as signed_in:
            assert signed_in.get("/api/me")["username"] == person.username


def test_one_invite_races_to_one_account(
    community: Community, database_url: str, tmp_path: Path
) -> None:
    """Concurrent accepts of one code in two server processes: exactly one account."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    code = _invite(community)
    before = community.counts()
    with (
        # Multiple 1: these count entries exactly; checkpoint padding is tested on its own.
        live_server(database_url, tmp_path / "data", log_checkpoint_size_multiple="1") as first,
        live_server(database_url, tmp_path / "data", log_checkpoint_size_multiple="1") as second,
    ):

        def accept(i: int) -> int:
            server = (first, second)[i % 2]
            response = httpx.post(
                f"{server}/api/invites/accept",
                timeout=60,
                json={"code": code, "username": f"racer{i}", "password": STRONG},
            )
            assert response.status_code in (201, 409), response.text
            return response.status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(accept, range(8)))
    assert statuses.count(201) == 1
    after = community.counts()
    assert after["users"] == before["users"] + 1
    assert after["log_entries"] == before["log_entries"] + 2
