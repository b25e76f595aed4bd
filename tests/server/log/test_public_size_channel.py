"""The public log's size tells a requester nothing about who was asked or who declined (DESIGN
promise 3), with the default settings, on SQLite and PostgreSQL.

A requester can read, without logging in, the checkpoint and every size a proof or hash tile
is served for. So: nothing public reaches past the latest published checkpoint; only
request-level changes (`request:*`) publish one at once, so a decline waits for the periodic
checkpoint; and every published size is a multiple of `log_checkpoint_size_multiple` (16), so
a few declines, expiries or first polls move it by one step of 16 whatever their number.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from sqlalchemy import func, select

from app.audit import integrator
from app.audit.models import LogEntry
from app.log import checkpoints, tree
from app.log.models import LogCheckpoint
from app.permissions import Role
from app.scheduler import run_once
from app.settings import Settings
from porchlight.tlog.tiles import Tile
from tests.server.factories import Clock, Community, EnrolledDevice
from tests.server.requests.helpers import World, make_world

STEP = 16


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with the checkpoint size multiple back at its default."""
    default = Settings.model_fields["log_checkpoint_size_multiple"].default
    assert default == STEP
    return settings.model_copy(update={"log_checkpoint_size_multiple": default})


def published(community: Community) -> int:
    """The size in the public checkpoint, as anyone reads it."""
    response = community.client.get("/log/checkpoint")
    assert response.status_code == 200
    return int(response.text.split("\n")[1])


def checkpoint_count(community: Community) -> int:
    with community.session() as session:
        return session.scalar(select(func.count()).select_from(LogCheckpoint)) or 0


def integrate(community: Community) -> int:
    """Integrate everything pending (what the background loop does within 0.2 s)."""
    with community.session() as session:
        size = integrator.integrate_all(session)
        session.commit()
        return size


def periodic(community: Community) -> int:
    """One round of the periodic publisher (every log_checkpoint_interval_seconds)."""
    checkpoints.publish_now(community.app.state.sessionmaker, community.app.state.log_signer)
    return published(community)


def open_with_asks(community: Community, inside: int) -> tuple[World, int, list[EnrolledDevice]]:
    world = make_world(community)
    devices = [
        world.located_device(community.person(Role.resident), 10 * i, 5 * i) for i in range(inside)
    ]
    world.located_device(community.person(Role.resident), 5000, 0)  # outside: never asked
    created = world.submit()
    assert world.review(created["id"]).json()["state"] == "open"
    return world, created["id"], devices


def first_polls(world: World, devices: list[EnrolledDevice]) -> list[str]:
    """Each device's first poll (one `ask:deliver` each); returns their ask ids."""
    return [world.device_asks(device)[0]["ask_id"] for device in devices]


def decline(world: World, device: EnrolledDevice, ask_id: str) -> None:
    response = world.device_call(device, "POST", f"/api/device/asks/{ask_id}/decline")
    assert response.status_code == 200, response.text


def test_nothing_public_reaches_past_the_published_checkpoint(community: Community) -> None:
    world, _, devices = open_with_asks(community, 3)
    first_polls(world, devices)
    size = published(community)
    integrated = integrate(community)
    assert integrated > size  # the first polls are in the tree, not in any checkpoint yet
    assert size < 256  # everything below is in tile 0
    client = community.client
    # Inclusion proofs: up to the published size, and no further (the fast path and the route).
    assert client.get(f"/log/proof/inclusion?index=0&size={size}").status_code == 200
    for query in (f"index=0&size={size + 1}", f"index=0&size={integrated}"):
        refused = client.get(f"/log/proof/inclusion?{query}")
        assert refused.status_code == 422, refused.text
        assert "latest published checkpoint" in refused.json()["message"]
    # Consistency proofs.
    assert client.get(f"/log/proof/consistency?from=1&to={size}").status_code == 200
    refused = client.get(f"/log/proof/consistency?from=1&to={size + 1}")
    assert refused.status_code == 422 and "latest published checkpoint" in refused.text
    # Hash tiles, partial ones included: the published width and none wider.
    assert client.get(f"/log/{Tile(0, 0, size).path()}").status_code == 200
    for width in (size + 1, integrated):
        assert client.get(f"/log/{Tile(0, 0, width).path()}").status_code == 404
    # Entry bundles too, even for an auditor (one rule for every tile).
    auditor = community.auth(community.person(Role.auditor))
    bundle = client.get(f"/log/{Tile(None, 0, size).path()}", headers=auditor)
    assert bundle.status_code == 200
    assert client.get(f"/log/{Tile(None, 0, size + 1).path()}", headers=auditor).status_code == 404
    # Once the periodic checkpoint covers them, they are served.
    now_published = periodic(community)
    assert now_published >= integrated
    assert client.get(f"/log/proof/inclusion?index=0&size={integrated}").status_code == 200
    assert client.get(f"/log/{Tile(0, 0, integrated).path()}").status_code == 200


def test_a_decline_does_not_publish_a_checkpoint(community: Community) -> None:
    world, _, devices = open_with_asks(community, 2)
    asks = first_polls(world, devices)
    before = (checkpoint_count(community), published(community))
    decline(world, devices[0], asks[0])
    integrate(community)
    assert (checkpoint_count(community), published(community)) == before
    # The periodic checkpoint covers it.
    assert periodic(community) > before[1]


def test_published_sizes_move_in_steps_that_hide_declines_and_expiries(
    community: Community, clock: Clock
) -> None:
    world, request_id, devices = open_with_asks(community, 7)
    # request:submit and request:approve published at once: already padded.
    sizes = [published(community)]
    asks = first_polls(world, devices)  # 7 first polls
    sizes.append(periodic(community))
    decline(world, devices[0], asks[0])  # 1 decline
    sizes.append(periodic(community))
    for device, ask_id in zip(devices[1:5], asks[1:5], strict=True):  # 4 declines
        decline(world, device, ask_id)
    sizes.append(periodic(community))
    assert periodic(community) == sizes[-1]  # nothing new: no new checkpoint, no padding
    # The deadline: the 2 unanswered asks expire, then the request closes (published at once).
    clock.advance(days=7, seconds=1)
    run_once(community.app.state.sessionmaker, community.app.state.clip_store, community.now())
    sizes.append(published(community))
    assert all(size % STEP == 0 for size in sizes), sizes
    # 7 polls, 1 decline, 4 declines, 2 expiries and the close: one step each, so the public
    # sizes say only that something happened, not how many.
    steps = [after - before for before, after in pairwise(sizes)]
    assert steps == [STEP] * 4, sizes
    with community.session() as session:
        rows = session.execute(
            select(LogEntry.actor, LogEntry.action, LogEntry.subject).where(
                LogEntry.index >= sizes[0], LogEntry.index < sizes[-1]
            )
        ).all()
        # Every stored checkpoint is padded, the ones no one happened to read included.
        stored = list(session.scalars(select(LogCheckpoint.size)))
    assert all(size % STEP == 0 for size in stored), stored
    actions = [action for _, action, _ in rows]
    assert actions.count("ask:decline") == 5 and actions.count("ask:expire") == 2
    assert f"request:{request_id}" in [subject for _, _, subject in rows]
    padding = [(actor, subject) for actor, action, subject in rows if action == "log:pad"]
    assert padding and set(padding) == {("system", "log:padding")}
    # The padding is counted by no report line.
    assert "log:pad" not in community.client.get("/api/transparency").text


def test_request_approval_still_publishes_at_once(community: Community) -> None:
    world = make_world(community)
    world.located_device(community.person(Role.resident), 0, 0)
    created = world.submit()
    before = published(community)
    assert world.review(created["id"]).json()["state"] == "open"
    after = published(community)  # no periodic round: the approval's commit published it
    assert after > before and after % STEP == 0
    with community.session() as session:
        approved = session.scalar(
            select(LogEntry.index).where(
                LogEntry.action == "request:approve", LogEntry.subject == f"request:{created['id']}"
            )
        )
        assert approved is not None and approved < after
        assert tree.committed_size(session) == after  # padded to the step, nothing past it


def test_padding_entries_are_system_entries_and_the_multiple_is_bounded() -> None:
    assert checkpoints.padding_needed(0, STEP) == 0
    assert checkpoints.padding_needed(1, STEP) == 15
    assert checkpoints.padding_needed(16, STEP) == 0
    assert checkpoints.padding_needed(17, 1) == 0
    for bad in (0, 1025):
        with pytest.raises(ValueError, match="log_checkpoint_size_multiple"):
            Settings(log_checkpoint_size_multiple=bad)
