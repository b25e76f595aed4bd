"""Who may see and do what with requests and asks; what requesters can never learn."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from app.accounts.models import User
from app.audit.entry import encode_entry, leaf_hash
from app.log import checkpoints
from app.permissions import Role
from porchlight.tlog.tiles import TILE_WIDTH, Tile
from tests.server.factories import Community
from tests.server.requests.helpers import make_world


def test_reviewer_rules_and_two_reviewer_policy(community: Community) -> None:
    world = make_world(community)
    admin = community.person(Role.admin)
    policy = community.client.get("/api/policy", headers=community.auth(admin)).json()
    assert policy == {
        "max_window_hours": 48,
        "max_radius_m": 500,
        "max_open_per_agency": 5,
        "ask_deadline_days": 7,
        "access_window_days": 30,
        "reviewers_required": 1,
        "max_clip_bytes": 2 * 1024**3,
    }
    response = community.client.put(
        "/api/policy", json=policy | {"reviewers_required": 2}, headers=community.auth(admin)
    )
    assert response.status_code == 200
    created = world.submit()
    # Accounts already refuse a reviewer with an agency; should one exist anyway (edited in
    # the database), the review service still refuses it for its agency's requests.
    insider = community.person(Role.reviewer)
    with community.session() as session:
        row = session.get(User, insider.id)
        assert row is not None
        row.agency_id = world.agency.id
    listed = community.client.get("/api/reviews", headers=community.auth(insider)).json()
    assert listed == []
    before = community.counts()
    refused = world.review(created["id"], reviewer=insider)
    assert refused.status_code == 403, refused.text
    assert community.counts() == before

    first = world.review(created["id"])
    assert first.json()["state"] == "submitted"
    again = world.review(created["id"])
    assert again.status_code == 409 and "another reviewer" in again.json()["message"]
    second = world.review(created["id"], reviewer=community.person(Role.reviewer))
    assert second.json()["state"] == "open"


def test_rejection_sends_no_asks(community: Community) -> None:
    world = make_world(community)
    device = world.located_device(community.person(Role.resident))
    created = world.submit()
    rejected = world.review(created["id"], "reject")
    assert rejected.json()["state"] == "rejected"
    assert rejected.json()["decision_reason"]
    assert world.device_asks(device) == []


def test_ownership(community: Community) -> None:
    world = make_world(community)
    alice, bob = community.person(Role.resident), community.person(Role.resident)
    device_a = world.located_device(alice)
    world.located_device(bob)
    opened = world.open_request()
    ask_a = world.device_asks(device_a)[0]["ask_id"]

    # Bob cannot see, decline or revoke Alice's ask.
    bobs = community.client.get("/api/asks", headers=community.auth(bob)).json()
    assert ask_a not in [a["ask_id"] for a in bobs] and len(bobs) == 1
    for verb in ("decline", "revoke"):
        response = community.client.post(f"/api/asks/{ask_a}/{verb}", headers=community.auth(bob))
        assert response.status_code == 404
    # Another agency's requester sees nothing of this request.
    other = world.new_agency()
    auth = community.auth(other.requester)
    assert community.client.get("/api/requests", headers=auth).json() == []
    for path in (f"/api/requests/{opened['id']}", f"/api/requests/{opened['id']}/shared"):
        assert community.client.get(path, headers=auth).status_code == 404
    assert (
        community.client.post(f"/api/requests/{opened['id']}/close", headers=auth).status_code
        == 404
    )
    # An auditor reads every request record.
    auditor = community.auth(community.person(Role.auditor))
    assert [r["id"] for r in community.client.get("/api/requests", headers=auditor).json()] == [
        opened["id"]
    ]
    # Alice declines on the web account instead of the device.
    declined = community.client.post(f"/api/asks/{ask_a}/decline", headers=community.auth(alice))
    assert declined.json()["state"] == "declined"


def _keys(document: Any) -> set[str]:
    if isinstance(document, dict):
        return set(document) | {k for v in document.values() for k in _keys(v)}
    if isinstance(document, list):
        return {k for v in document for k in _keys(v)}
    return set()


def test_requester_learns_nothing_about_other_residents(community: Community) -> None:
    world = make_world(community)
    residents = [community.person(Role.resident) for _ in range(4)]
    devices = [world.located_device(r, 10 * i, 5 * i) for i, r in enumerate(residents)]
    opened = world.open_request()
    asks = [world.device_asks(d)[0]["ask_id"] for d in devices]
    request_id = opened["id"]
    requester = community.auth(world.agency.requester)

    def requester_view() -> list[str]:
        return [
            community.client.get(path, headers=requester).text
            for path in (
                "/api/requests",
                f"/api/requests/{request_id}",
                f"/api/requests/{request_id}/shared",
            )
        ]

    baseline = requester_view()
    # Device 0 consents and shares; 1 declines; 2 consents then revokes; 3 stays silent.
    for index in (0, 2):
        assert world.consent(devices[index], asks[index], request_id, ["clip-1"]).status_code == 200
        clip = world.clip("clip-1")
        assert world.upload(devices[index], asks[index], clip).status_code == 201
    world.device_call(devices[1], "POST", f"/api/device/asks/{asks[1]}/decline")
    shared_before_revoke = world.shared(request_id)
    assert [s["pseudonym"] for s in shared_before_revoke] == ["Resident A", "Resident B"]
    revoked = community.client.post(
        f"/api/asks/{asks[2]}/revoke", headers=community.auth(residents[2])
    )
    assert revoked.status_code == 200

    views = requester_view()
    shared = json.loads(views[2])
    assert [s["pseudonym"] for s in shared] == ["Resident A"]
    # Declines, silence and revocations leave the request and list views exactly as before.
    assert json.loads(views[0]) == json.loads(baseline[0])
    assert json.loads(views[1]) == json.loads(baseline[1])
    forbidden_words = [*asks, "Resident B", "declin", "pending", "revok", "porch"]
    forbidden_words += [r.username for r in residents]
    for view in views:
        for word in forbidden_words:
            assert word not in view, word
        keys = {k.lower() for k in _keys(json.loads(view))}
        for part in ("ask", "count", "declin", "pending", "resident", "location", "latitude"):
            assert not any(part in k for k in keys), (part, keys)


def _tile_paths(level: int | None, size: int) -> list[str]:
    """The level-0 hash tiles (level 0) or entry bundles (None) of a log of `size` entries."""
    full, rest = divmod(size, TILE_WIDTH)
    tiles = [Tile(level, n) for n in range(full)] + ([Tile(level, full, rest)] if rest else [])
    return [tile.path() for tile in tiles]


def test_public_log_endpoints_reveal_no_asks_or_declines(community: Community) -> None:
    """DESIGN promise 3 against the log: after a decline, everything a requester or anyone
    signed out can fetch about the log is hashes, signatures and quarterly counts."""
    world = make_world(community)
    residents = [community.person(Role.resident) for _ in range(3)]
    devices = [world.located_device(r, 10 * i, 5 * i) for i, r in enumerate(residents)]
    opened = world.open_request()
    request_id = opened["id"]
    asks = [world.device_asks(d)[0]["ask_id"] for d in devices]
    declined = world.device_call(devices[1], "POST", f"/api/device/asks/{asks[1]}/decline")
    assert declined.status_code < 300, declined.text
    client = community.client
    # Publishing is periodic; make sure a checkpoint covers the decline.
    with community.session() as session:
        checkpoints.publish_checkpoint(session, community.app.state.log_signer)
    checkpoint = client.get("/log/checkpoint").text
    size = int(checkpoint.split("\n")[1])
    bundles = _tile_paths(None, size)

    # What these words would betray is really in the log: the auditor's bundles carry them.
    auditor = community.auth(community.person(Role.auditor))
    everything = b"".join(client.get(f"/log/{p}", headers=auditor).content for p in bundles)
    # Quoted as in the canonical JSON, so "user:1" never matches inside "user:12".
    secrets = [f'"ask:{a}"' for a in asks] + [f'"request:{request_id}"', '"to":"declined"']
    secrets += [f'"user:{r.id}"' for r in residents] + ['"ask:decline"']
    for secret in [*secrets, '"ask:deliver"', '"asks":3']:
        assert secret.encode() in everything, secret

    public = [
        "/log/checkpoint",
        *[f"/log/{p}" for p in _tile_paths(0, size)],
        "/log/proof/consistency?from=1",
        *[f"/log/proof/inclusion?index={i}" for i in range(size)],
        "/api/log/public",
        "/api/transparency",
        "/transparency",
        "/transparency/checkpoint",
    ]
    callers = {"requester": community.auth(world.agency.requester), "anonymous": {}}
    for caller, headers in callers.items():
        for path in public:
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (caller, path)
            for secret in secrets:
                # The report names the actions it counts ("ask:decline"), never an event.
                if secret == '"ask:decline"' and "transparency" in path:
                    continue
                assert secret.encode() not in response.content, (caller, path, secret)
        for path in [*[f"/log/{p}" for p in bundles], "/api/log/entries"]:
            response = client.get(path, headers=headers)
            assert response.status_code in (401, 403), (caller, path)
            assert not any(s.encode() in response.content for s in secrets), (caller, path)


def test_requester_cannot_recover_the_ask_count_from_public_leaf_hashes(
    community: Community,
) -> None:
    """The `request:open` entry's bytes are all known to the requester (its time and deadline
    are in their request view) except `details.asks`; public leaf hashes (inclusion proofs,
    level-0 hash tiles) must not let them confirm a guess of it (DESIGN promise 3)."""
    world = make_world(community)
    for i, resident in enumerate(community.person(Role.resident) for _ in range(3)):
        world.located_device(resident, 10 * i, 5 * i)
    opened = world.open_request()
    with community.session() as session:
        checkpoints.publish_checkpoint(session, community.app.state.log_signer)
    client = community.client
    view = client.get(
        f"/api/requests/{opened['id']}", headers=community.auth(world.agency.requester)
    ).json()
    size = int(client.get("/log/checkpoint").text.split("\n")[1])
    public = {
        base64.b64decode(client.get(f"/log/proof/inclusion?index={i}").json()["leaf_hash"])
        for i in range(size)
    }
    deadline = datetime.fromisoformat(view["deadline"]).isoformat()

    def guesses(salt: bytes | None) -> list[int]:
        found = []
        for count in range(100):
            entry = encode_entry(
                datetime.fromisoformat(view["decided_at"]),
                "system",
                "request:open",
                f"request:{opened['id']}",
                {"from": "approved", "to": "open", "asks": count, "deadline": deadline},
                salt=salt,
            )
            if leaf_hash(entry) in public:
                found.append(count)
        return found

    # The requester does not know the entry's salt: no guess matches.
    assert guesses(None) == []
    # Control: knowing the salt (an auditor reads it in the entry) the guess would succeed,
    # so the check above fails for the right reason.
    auditor = community.person(Role.auditor)
    entries = client.get(
        "/api/log/entries",
        params={"subject": f"request:{opened['id']}"},
        headers=community.auth(auditor),
    ).json()["entries"]
    opening = next(e for e in entries if e["action"] == "request:open")
    salt = bytes.fromhex(json.loads(base64.b64decode(opening["entry"]))["salt"])
    assert guesses(salt) == [3]
