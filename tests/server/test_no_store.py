"""An answer to a caller who proved who they are (a session cookie, an API token, a device's
signed call) carries `Cache-Control: no-store`: warrant details, shared-clip listings and clips
must not stay in a browser's history or a proxy. Routes that chose their own caching (the log's
checkpoint and tiles) keep it, and public pages fetched without a credential are unchanged."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.permissions import Role
from tests.server.factories import Community
from tests.server.requests.helpers import World, make_world

HTML = {"Accept": "text/html"}


def _shared_clip(world: World) -> tuple[int, str]:
    """An open request with one clip a resident shared: (request id, shared clip id)."""
    resident = world.community.person(Role.resident)
    device = world.located_device(resident)
    request_id = world.open_request()["id"]
    ask_id = world.device_asks(device)[0]["ask_id"]
    assert world.consent(device, ask_id, request_id, ["clip-1"]).status_code == 200
    assert world.upload(device, ask_id, world.clip("clip-1")).status_code == 201
    return request_id, world.shared(request_id)[0]["shared_clip_id"]


def test_authenticated_answers_are_not_stored(app: FastAPI, community: Community) -> None:
    world = make_world(community)
    request_id, shared_clip_id = _shared_clip(world)
    auth = community.auth(world.agency.requester)
    api = [
        community.client.get("/api/requests", headers=auth),
        community.client.get(f"/api/requests/{request_id}", headers=auth),
        community.client.get(f"/api/requests/{request_id}/shared", headers=auth),
        community.client.get(f"/api/requests/{request_id}/shared/{shared_clip_id}", headers=auth),
        # A refused token is an authenticated-looking call too: its 401 is not kept either.
        community.client.get("/api/requests", headers={"Authorization": "Bearer nope"}),
    ]
    assert [r.status_code for r in api] == [200, 200, 200, 200, 401]
    for response in api:
        assert response.headers.get("cache-control") == "no-store", response.request.url

    browser = TestClient(app, follow_redirects=False)
    community.login(world.agency.requester, browser)
    pages = [
        browser.get(f"/requests/{request_id}", headers=HTML),
        browser.get(f"/requests/{request_id}/clips/{shared_clip_id}", headers=HTML),
        browser.get("/transparency", headers=HTML),  # public, but this person's nav is on it
    ]
    assert [r.status_code for r in pages] == [200, 200, 200]
    assert pages[1].headers["content-disposition"].endswith('.age"')
    for response in pages:
        assert response.headers.get("cache-control") == "no-store", response.request.url


def test_device_calls_are_not_stored(community: Community) -> None:
    world = make_world(community)
    device = world.located_device(community.person(Role.resident))
    world.open_request()
    answer = world.device_call(device, "GET", "/api/device/asks")
    assert answer.status_code == 200 and answer.json()
    assert answer.headers.get("cache-control") == "no-store"


def test_routes_keep_their_own_caching(app: FastAPI, community: Community) -> None:
    world = make_world(community)
    world.open_request()
    anonymous = TestClient(app)
    checkpoint = anonymous.get("/log/checkpoint")
    assert checkpoint.status_code == 200
    size = int(checkpoint.text.splitlines()[1])
    assert 0 < size < 256
    tile = f"/log/tile/0/000.p/{size}"
    auth = community.auth(world.agency.requester)
    for headers in ({}, auth):
        assert anonymous.get(tile, headers=headers).headers["cache-control"] == (
            "public, max-age=31536000, immutable"
        )
        assert anonymous.get("/log/checkpoint", headers=headers).headers["cache-control"] == (
            "no-cache"
        )
    # A public page fetched without any credential is unchanged: no caching directive added.
    page = anonymous.get("/transparency", headers=HTML)
    assert page.status_code == 200
    assert "cache-control" not in page.headers
    assert page.headers["x-frame-options"] == "DENY"
