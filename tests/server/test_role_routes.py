"""Role by route, built from the app's own route table (DESIGN "Roles").

Each route is called as every role (API token), as nobody, and as a signed device. Allowed
callers must get past authorisation (any status but 401/403); everyone else must be refused
with 401, 403 or 404. A route missing from ROUTE_RULES fails the first test.
"""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.permissions import Role
from app.route_index import route_keys
from tests.server.factories import Community
from tests.server.route_rules import DEVICE, PUBLIC, ROUTE_RULES

REFUSED = {401, 403, 404}


def routes_without_rules(app: FastAPI) -> list[tuple[str, str]]:
    return [key for key in route_keys(app) if key not in ROUTE_RULES]


def test_every_route_has_a_rule(app: FastAPI) -> None:
    assert routes_without_rules(app) == []
    stale = set(ROUTE_RULES) - set(route_keys(app))
    assert stale == set(), f"rules for routes that no longer exist: {stale}"


def test_a_new_route_without_a_rule_is_caught(app: FastAPI) -> None:
    @app.get("/api/unruled")
    def unruled() -> dict[str, str]:
        return {}

    assert routes_without_rules(app) == [("GET", "/api/unruled")]


def _concrete(path: str) -> str:
    # Any id: authorisation is decided before the id is looked up.
    return re.sub(r"\{[^}]+\}", "1", path)


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> int:
    return int(client.request(method, path, headers=headers, json={}).status_code)


@pytest.mark.parametrize("key", sorted(ROUTE_RULES), ids=lambda k: f"{k[0]} {k[1]}")
def test_role_by_route(key: tuple[str, str], community: Community, client: TestClient) -> None:
    method, template = key
    rule = ROUTE_RULES[key]
    path = _concrete(template)
    people = {role: community.person(role) for role in Role}
    resident_device = community.enrol_device(people[Role.resident])
    outcome: dict[str, int] = {}
    for role, person in people.items():
        outcome[role.value] = _call(client, method, path, community.auth(person))
    outcome["anonymous"] = _call(client, method, path, {})
    body = b"{}"
    outcome["device"] = client.request(
        method,
        path,
        content=body,
        headers={
            **community.device_headers(resident_device, method, path, body),
            "Content-Type": "application/json",
        },
    ).status_code

    if rule == PUBLIC:
        allowed = set(outcome)
    elif rule == DEVICE:
        allowed = {"device"}
    else:
        assert isinstance(rule, frozenset)
        allowed = {role.value for role in rule}
    for caller, status in outcome.items():
        if caller in allowed:
            assert status not in {401, 403}, f"{caller} refused ({status}) on {method} {path}"
        else:
            assert status in REFUSED, f"{caller} got {status} on {method} {path}"
