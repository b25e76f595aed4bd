"""`porchlight server ...`: run and administer the community server."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    server = subparsers.add_parser("server", help="run and administer the community server")
    commands = server.add_subparsers(dest="server_command", metavar="SUBCOMMAND", required=True)
    run = commands.add_parser("run", help="serve the API and pages (uvicorn)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    print(f"Porchlight server on http://{args.host}:{args.port}/ (API docs at /docs)", flush=True)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")
    return 0
