"""What several benches share: a scratch PostgreSQL database, and counts that must be positive."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server at `server_url` (its URL), dropped afterwards with
    every session still on it."""
    name = f"porchlight_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def positive(text_value: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text_value)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
