"""The single `porchlight` command line entry point.

Each command group lives in its own module exposing `register(subparsers)`; a group is
imported only when it is used, so `porchlight encrypt` on a Pi never loads the server, and a
group whose extra is not installed says which extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from porchlight import __version__


class CommandError(Exception):
    """A user mistake or an expected failure: printed as one line plus a hint, never a traceback."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


@dataclass(frozen=True)
class CommandGroup:
    name: str
    module: str
    extra: str | None
    help: str


# Top-level names -> where they live. Key and file commands are top level, like age's.
_AGE = "porchlight.age.cli"
GROUPS: tuple[CommandGroup, ...] = (
    CommandGroup("keygen", _AGE, None, "generate an age identity (post-quantum by default)"),
    CommandGroup("encrypt", _AGE, None, "encrypt a file to recipients or a passphrase"),
    CommandGroup("decrypt", _AGE, None, "decrypt an age file"),
    CommandGroup("rewrap", _AGE, None, "re-address an age file to new recipients, same payload"),
    CommandGroup("server", "app.cli", "server", "run and administer the community server"),
    CommandGroup("device", "device.cli", "device", "the camera agent on the Raspberry Pi"),
    CommandGroup("audit", "porchlight.audit_cli", None, "verify, cosign and read the log"),
    CommandGroup("request", "porchlight.request_cli", None, "file and follow footage requests"),
)

Handler = Callable[[argparse.Namespace], int | None]


def _missing_extra(group: CommandGroup, error: ImportError) -> Handler:
    def handler(_: argparse.Namespace) -> int:
        raise CommandError(
            f"'porchlight {group.name}' is not available: {error}",
            hint=f"install the '{group.extra}' extra: pip install 'porchlight[{group.extra}]'",
        )

    return handler


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="porchlight",
        description="Porchlight: neighbourhood cameras whose footage only the homeowner can open.",
    )
    parser.add_argument("--version", action="version", version=f"porchlight {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    group = next((g for g in GROUPS if g.name == wanted), None)
    if group is not None:
        try:
            module = importlib.import_module(group.module)
        except ImportError as error:
            if group.extra is None:
                raise
            sub = subparsers.add_parser(group.name, help=group.help)
            sub.set_defaults(handler=_missing_extra(group, error))
        else:
            module.register(subparsers)
    for other in GROUPS:
        # The rest are only listed; their modules load when they are used.
        if other.name not in subparsers.choices:
            subparsers.add_parser(other.name, help=other.help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        result = handler(args)
    except CommandError as error:
        print(f"porchlight: error: {error.message}", file=sys.stderr)
        if error.hint:
            print(f"porchlight: hint: {error.hint}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("porchlight: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    # Re-enter through the package module so command modules and this entry point share
    # one CommandError class (run as a script, this file is a second module, `__main__`).
    from porchlight.cli import main as package_main

    sys.exit(package_main())
