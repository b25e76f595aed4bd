"""Two server processes on one database taking concurrent writes: one log, no gaps, no repeats."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import select

from app.audit.models import LogEntry, LogHead
from app.permissions import Role
from tests.server.factories import Community, x25519_recipient
from tests.server.live import live_server
from tests.server.log.helpers import integrate_log

WRITERS_PER_SERVER = 4
WRITES_PER_WRITER = 15


def test_two_processes_append_one_gapless_log(
    community: Community, database_url: str, tmp_path: Path
) -> None:
    admin = community.person(Role.admin)
    setup_size = integrate_log(community.app)
    assert setup_size is not None
    headers = community.auth(admin)
    with (
        # Multiple 1: these count entries exactly; checkpoint padding is tested on its own.
        live_server(database_url, tmp_path / "data", log_checkpoint_size_multiple="1") as first,
        live_server(database_url, tmp_path / "data", log_checkpoint_size_multiple="1") as second,
    ):

        def writer(server: str, writer_id: int) -> list[int]:
            made = []
            with httpx.Client(base_url=server, headers=headers, timeout=60) as http:
                for n in range(WRITES_PER_WRITER):
                    name = f"Agency {server[-5:]}-{writer_id}-{n}"
                    response = http.post(
                        "/api/agencies",
                        json={
                            "name": name,
                            "jurisdiction": "Testshire",
                            "recipient": x25519_recipient(),
                        },
                    )
                    assert response.status_code == 201, response.text
                    made.append(int(response.json()["id"]))
            return made

        jobs = [(server, i) for server in (first, second) for i in range(WRITERS_PER_SERVER)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(lambda job: writer(*job), jobs))

    # Each server integrates at shutdown; this makes sure nothing is left pending either way.
    integrate_log(community.app)
    agency_ids = [agency_id for made in results for agency_id in made]
    total_writes = len(jobs) * WRITES_PER_WRITER
    assert len(set(agency_ids)) == total_writes
    with community.session() as session:
        rows = list(session.scalars(select(LogEntry).order_by(LogEntry.index)))
        head = session.scalar(select(LogHead.size))
    assert head == len(rows) == setup_size + total_writes
    assert [row.index for row in rows] == list(range(len(rows)))
    created = [row.subject for row in rows if row.action == "agency:create"]
    assert sorted(created) == sorted({*created})  # each agency exactly once
    assert {f"agency:{i}" for i in agency_ids} <= set(created)
    for row in rows:
        assert row.leaf_hash == hashlib.sha256(b"\x00" + row.entry).digest()
    decoded = [json.loads(row.entry) for row in rows]
    assert all(d["action"] == row.action for d, row in zip(decoded, rows, strict=True))
