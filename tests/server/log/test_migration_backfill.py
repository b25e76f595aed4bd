"""Migration 0002 stores the tree of entries appended before it existed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, insert, select, update

from app.audit.entry import encode_entry, leaf_hash
from app.audit.models import LogEntry, LogHead
from app.log.models import LogTreeNode
from app.migrate import upgrade
from porchlight.tlog.merkle import complete_levels
from tests.server.databases import empty_database


def test_upgrade_backfills_tree_nodes(backend: str, tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as url:
        upgrade(url, "0001")
        moment = datetime(2026, 11, 22, tzinfo=UTC)
        entries = [
            encode_entry(moment, "system", "invite:create", f"invite:{n}", {}) for n in range(37)
        ]
        engine = create_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(
                    insert(LogEntry),
                    [
                        {
                            "index": n,
                            "created_at": moment,
                            "actor": "system",
                            "action": "invite:create",
                            "subject": f"invite:{n}",
                            "entry": data,
                            "leaf_hash": leaf_hash(data),
                        }
                        for n, data in enumerate(entries)
                    ],
                )
                connection.execute(update(LogHead).values(size=len(entries)))
            upgrade(url)
            with engine.connect() as connection:
                stored = {
                    (level, index): bytes(value)
                    for level, index, value in connection.execute(
                        select(LogTreeNode.level, LogTreeNode.index, LogTreeNode.hash)
                    )
                }
        finally:
            engine.dispose()
        levels = complete_levels([leaf_hash(e) for e in entries])
        assert stored == {
            (level, index): value
            for level, hashes in enumerate(levels)
            for index, value in enumerate(hashes)
        }
