"""`kill -9` of the server during an upload (issue 6, item 4): after a restart the device's
retry completes, the clip is stored once with the right bytes, and no partial blob is ever
served. A real uvicorn process on a loopback port, the real database and clip directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.permissions import Role
from app.settings import Settings
from tests.server.factories import Community
from tests.server.live import _start
from tests.server.requests.helpers import make_world

CHUNK = 256 * 1024


def test_kill_9_mid_upload_then_retry(community: Community, settings: Settings) -> None:
    world = make_world(community)
    device = world.located_device(community.person(Role.resident), 10, 10)
    opened = world.open_request()
    ask_id = world.device_asks(device)[0]["ask_id"]
    assert world.consent(device, ask_id, opened["id"], ["clip-1"]).status_code == 200
    clip = world.clip("clip-1", size=24 * 1024 * 1024)
    path = f"/api/device/asks/{ask_id}/clips/clip-1"
    store = community.app.state.clip_store
    data_dir: Path = settings.data_dir

    process, url = _start(settings.database_url, data_dir, {})
    sent = 0

    def body_then_crash() -> Iterator[bytes]:
        nonlocal sent
        for start in range(0, len(clip.data), CHUNK):
            if sent >= 8 * 1024 * 1024 and process.poll() is None:
                process.kill()  # SIGKILL: no cleanup handlers run
                process.wait()
            yield clip.data[start : start + CHUNK]
            sent += CHUNK

    try:
        with pytest.raises(httpx.TransportError):
            httpx.put(
                url + path,
                content=body_then_crash(),
                headers=world.upload_headers(device, ask_id, clip),
                timeout=30,
            )
        assert process.poll() is not None
        # Nothing under a final name, nothing recorded, nothing listed or downloadable.
        assert list(store.blob_dir.iterdir()) == []
        partials = list(store.temp_dir.iterdir())
        assert all(p.name.endswith(".part") and p.stat().st_size < len(clip.data) for p in partials)
        assert world.shared(opened["id"]) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    process, url = _start(settings.database_url, data_dir, {})
    try:
        retry = httpx.put(
            url + path,
            content=clip.data,
            headers=world.upload_headers(device, ask_id, clip),
            timeout=60,
        )
        assert retry.status_code == 201, retry.text
        listed = world.shared(opened["id"])
        assert len(listed) == 1
        download = httpx.get(
            f"{url}/api/requests/{opened['id']}/shared/{listed[0]['shared_clip_id']}",
            headers=community.auth(world.agency.requester),
            timeout=60,
        )
        assert download.status_code == 200
        assert download.content == clip.data
        assert [p.name for p in store.blob_dir.iterdir()] == [f"{ask_id}-clip-1"]
        # A second retry (say the 201 was lost) is a 200 and stores nothing new.
        again = httpx.put(
            url + path,
            content=clip.data,
            headers=world.upload_headers(device, ask_id, clip),
            timeout=60,
        )
        assert again.status_code == 200, again.text
    finally:
        process.kill()
        process.wait()
    # The crashed writer's temporary is swept; the stored blob is untouched.
    for partial in store.temp_dir.iterdir():
        os.utime(partial, (0, 0))
    store.sweep_temporary(3600)
    assert list(store.temp_dir.iterdir()) == []
    assert (store.blob_dir / f"{ask_id}-clip-1").read_bytes() == clip.data
