"""`porchlight server ...`: run, migrate and administer the community server."""

from __future__ import annotations

import argparse
import gc
import getpass
import os
import shutil
import sys
from typing import TYPE_CHECKING

from porchlight.cli import CommandError

if TYPE_CHECKING:
    import socket

    from fastapi import FastAPI

    from app.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    server = subparsers.add_parser("server", help="run and administer the community server")
    commands = server.add_subparsers(dest="server_command", metavar="SUBCOMMAND", required=True)

    run = commands.add_parser("run", help="migrate, then serve the API (uvicorn)")
    run.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s: this machine only, for the TLS "
        "reverse proxy in front of it)",
    )
    run.add_argument(
        "--port", type=int, default=8000, help="TCP port to listen on (default: %(default)s)"
    )
    run.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="server processes sharing the port (default: one per CPU)",
    )
    run.add_argument(
        "--access-log",
        action="store_true",
        help="log every HTTP request with the caller's address (off by default: it would keep "
        "a record of when each resident's camera and browser called, which nothing needs; "
        "errors and start-up are logged either way)",
    )
    run.set_defaults(handler=_run)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(handler=_migrate)

    admin = commands.add_parser("create-admin", help="create an admin account")
    admin.add_argument("--username", help="asked for when omitted")
    admin.add_argument("--password-file", help="read the password from this file (else prompt)")
    admin.set_defaults(handler=_create_admin)

    invite = commands.add_parser("invite", help="issue a single-use invite code for a role")
    invite.add_argument(
        "--role", required=True, choices=["resident", "reviewer", "admin", "auditor", "requester"]
    )
    invite.add_argument("--agency", type=int, help="agency id (required for requesters)")
    invite.set_defaults(handler=_invite)

    log_key = commands.add_parser(
        "log-key", help="print the log's verifier key (made on first use; the secret stays put)"
    )
    log_key.set_defaults(handler=_log_key)


def _settings() -> Settings:
    from pydantic import ValidationError

    from app.settings import Settings

    try:
        return Settings()
    except (ValidationError, OSError, ValueError) as error:
        raise CommandError(
            f"invalid server settings: {error}",
            hint="check PORCHLIGHT_* variables and PORCHLIGHT_CONFIG",
        ) from None


_DATABASE_URL_HINT = (
    "set PORCHLIGHT_DATABASE_URL to sqlite:////path/to/porchlight.sqlite3 or "
    "postgresql+psycopg://user@host/database (or leave it unset for SQLite in the data directory)"
)


def _check_database_url(settings: Settings) -> None:
    """One line for a URL that is not one, or names a database Porchlight does not run on."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        # Not echoed: a mistyped URL may still hold a password.
        raise CommandError(
            "PORCHLIGHT_DATABASE_URL is not a database URL", hint=_DATABASE_URL_HINT
        ) from None
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise CommandError(
            f"PORCHLIGHT_DATABASE_URL names a {backend!r} database: Porchlight runs on SQLite "
            "or PostgreSQL",
            hint=_DATABASE_URL_HINT,
        )
    try:
        url.get_dialect().import_dbapi()
    except ImportError:
        raise CommandError(
            f"PORCHLIGHT_DATABASE_URL asks for the {url.drivername!r} driver, which is not "
            "installed",
            hint=_DATABASE_URL_HINT,
        ) from None


def _migrate_to_head(settings: Settings) -> None:
    from app.migrate import DatabaseUnreachable, MigrationError, SchemaTooNew, upgrade
    from app.settings import prepare_data_dir

    _check_database_url(settings)
    try:
        # As the server does at start: the directory 0700 and a new SQLite file 0600 before
        # the migration creates it (under umask 022 it would be readable by every user).
        prepare_data_dir(settings)
    except OSError as error:
        raise CommandError(
            f"cannot create the data directory {settings.data_dir}: {error.strerror or error}",
            hint="point PORCHLIGHT_DATA_DIR at a directory the server's user can write",
        ) from None
    try:
        upgrade(settings.database_url)
    except DatabaseUnreachable as error:
        raise CommandError(
            f"cannot reach the database: {error}", hint="check PORCHLIGHT_DATABASE_URL"
        ) from None
    except SchemaTooNew as error:
        raise CommandError(
            str(error),
            hint="run the Porchlight release that wrote this database, or a newer one; to use "
            "this version, restore a backup of the database made before the upgrade",
        ) from None
    except MigrationError as error:
        raise CommandError(
            f"migration failed: {error}",
            hint="each migration commits whole, so the schema is at the last one that finished; "
            "fix the cause and run `porchlight server migrate` again",
        ) from None


def _migrate(_: argparse.Namespace) -> int:
    settings = _settings()
    _migrate_to_head(settings)
    print("database schema is up to date", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from app.accounts import service as accounts
    from app.db import make_engine, make_sessionmaker
    from app.log.keys import LogKeyError, load_or_create
    from app.main import create_app
    from app.workers import ServeOptions, Supervisor, listening_sockets

    if args.workers < 1:
        raise CommandError("--workers must be at least 1")
    settings = _settings()
    _migrate_to_head(settings)
    # Made here, once, before the worker processes start; a bad key stops us with a message.
    try:
        load_or_create(settings)
    except LogKeyError as error:
        raise CommandError(str(error), hint=error.hint) from None
    except OSError as error:
        raise CommandError(str(error), hint="check PORCHLIGHT_DATA_DIR") from None
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        has_admin = accounts.admin_exists(session)
    engine.dispose()
    sockets: list[socket.socket] = []
    if args.workers > 1:
        # One socket per worker (app/workers.py); one worker: uvicorn binds its own.
        try:
            sockets = listening_sockets(args.host, args.port, args.workers)
        except OSError as error:
            raise CommandError(
                f"cannot listen on {args.host}:{args.port}: {error.strerror or error}",
                hint="is another server using that port? choose another with --port",
            ) from None
    print(
        f"Porchlight server on http://{args.host}:{args.port}/ "
        f"(API docs at http://{args.host}:{args.port}/docs)",
        flush=True,
    )
    print(f"data directory: {settings.data_dir.resolve()}", flush=True)
    if not has_admin:
        # Name the command by the path that started us, so `make run` users can paste it.
        command = _own_command()
        hint = f"no admin yet: create the first one with `{command} server create-admin`"
        print(hint, flush=True)
    if args.workers == 1:
        app = create_app(settings)
        settle_heap()
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level="info",
            access_log=args.access_log,
        )
        return 0
    # Each worker builds its own app from the same PORCHLIGHT_* environment. The lifespan
    # tasks (checkpoint publisher, deadline scheduler) run in every worker: both are written
    # to tolerate several processes (row locks with SKIP LOCKED, idempotent steps).
    return Supervisor(sockets, ServeOptions(args.host, args.port, args.access_log)).run()


def _die_with_parent() -> None:
    """Have the kernel stop this worker (SIGTERM) when the `server run` process that started
    it dies, even by SIGKILL: otherwise orphaned workers would go on serving the port with
    nobody supervising them, and a restart would find it taken."""
    import ctypes
    import multiprocessing
    import signal

    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != parent.pid:
        # The parent died before the request took effect: nobody would send the signal.
        os.kill(os.getpid(), signal.SIGTERM)


def worker_app() -> FastAPI:
    """The app factory of each `server run --workers N` process (N > 1)."""
    from app.main import create_app

    _die_with_parent()
    app = create_app()
    settle_heap()
    return app


# Container allocations between young-generation collections in a serving process (Python's
# default is 700).
_YOUNG_COLLECTION_THRESHOLD = 20_000


def settle_heap() -> None:
    """Keep the cyclic garbage collector's pauses out of request latency in a serving process.

    Once the app is built, what was imported and constructed (modules, routes, schemas, table
    metadata: hundreds of thousands of objects) lives as long as the process. Left in the
    collected generations, every full collection walks all of it: 100 to 250 ms with the event
    loop stopped, measured in a worker serving 1,000 polls/s on this 2-core machine, which is
    where the worst poll latencies came from. `gc.freeze` moves it out of the collector's
    reach; the young generation is collected every 20,000 allocations instead of 700, since a
    request's garbage is freed by reference counting and a collection that finds nothing is
    pure cost. Cyclic garbage made later is still collected.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_COLLECTION_THRESHOLD, middle, oldest)


def _read_password(path: str | None) -> str:
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().rstrip("\r\n")
        except OSError as error:
            raise CommandError(f"cannot read password file: {error}") from None
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for a password", hint="use --password-file")
    first = getpass.getpass("password (12+ characters): ")
    if getpass.getpass("again: ") != first:
        raise CommandError("the passwords differ")
    return first


def _create_admin(args: argparse.Namespace) -> int:
    from app.accounts import service as accounts
    from app.accounts.passwords import make_hasher
    from app.db import make_engine, make_sessionmaker, utcnow
    from app.errors import AppError
    from app.permissions import Role

    settings = _settings()
    _migrate_to_head(settings)
    username = args.username or input("admin user name: ").strip()
    password = _read_password(args.password_file)
    engine = make_engine(settings.database_url)
    hasher = make_hasher(settings.argon2_time_cost, settings.argon2_memory_kib)
    try:
        with make_sessionmaker(engine)() as session:
            user = accounts.create_user(
                session,
                hasher,
                username=username,
                password=password,
                role=Role.admin,
                agency_id=None,
                actor="system",
                now=utcnow(),
            )
            session.commit()
    except AppError as error:
        raise CommandError(error.message) from None
    finally:
        engine.dispose()
    print(f"admin {user.username!r} created (user {user.id}); sign in at /api/session")
    return 0


def _invite(args: argparse.Namespace) -> int:
    from app.accounts import service as accounts
    from app.db import make_engine, make_sessionmaker, utcnow
    from app.errors import AppError
    from app.permissions import Role

    settings = _settings()
    _migrate_to_head(settings)
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            invite, code = accounts.create_invite(
                session, None, Role(args.role), args.agency, settings, utcnow()
            )
            session.commit()
    except AppError as error:
        raise CommandError(error.message) from None
    finally:
        engine.dispose()
    print(code)
    print(
        f"invite {invite.id} for a {args.role}, single use, "
        f"expires {invite.expires_at:%Y-%m-%d %H:%M} UTC",
        file=sys.stderr,
    )
    return 0


def _log_key(_: argparse.Namespace) -> int:
    from app.log.keys import LogKeyError, key_path, load_or_create

    settings = _settings()
    _check_database_url(settings)
    try:
        signer = load_or_create(settings)
    except LogKeyError as error:
        raise CommandError(str(error), hint=error.hint) from None
    except OSError as error:
        raise CommandError(str(error), hint="check PORCHLIGHT_DATA_DIR") from None
    print(signer.verifier_key)
    print(
        f"log origin {signer.origin}; signing key in {key_path(settings)} (mode 0600). "
        "Auditors pass the line above to `porchlight audit verify --key`.",
        file=sys.stderr,
    )
    return 0


def _own_command() -> str:
    """How to invoke this same `porchlight` again (a venv path when not on PATH)."""
    launched = sys.argv[0]
    if os.path.basename(launched) == "porchlight" and shutil.which("porchlight") != launched:
        return os.path.relpath(launched) if not os.path.isabs(launched) else launched
    return "porchlight"
