"""The single `porchlight` command line entry point.

Each command group lives in its own module exposing `register(subparsers)`; a group is
imported only when it is used, so `porchlight encrypt` on a Pi never loads the server, and a
group whose extra is not installed says which extra to install. A module holding several
top-level commands may also expose `register_command(subparsers, name)`, to build only the
parser of the command that was asked for.

Start-up time counts here (`porchlight encrypt` of a small file is mostly start-up), so
this module imports neither `dataclasses` nor `typing`, and argparse's help formatter is
given the terminal's width instead of importing `shutil` to find it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from porchlight import __version__
from porchlight.text import shown

# Checkers treat any name TYPE_CHECKING as true; at run time `typing` is not imported.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class CommandError(Exception):
    """A user mistake or an expected failure: printed as one line plus a hint, never a traceback."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


class CommandGroup:
    """A top-level command: the module that registers it, the extra it needs, its help line."""

    __slots__ = ("extra", "help", "module", "name")

    def __init__(self, name: str, module: str, extra: str | None, help: str) -> None:
        self.name = name
        self.module = module
        self.extra = extra
        self.help = help

    def __repr__(self) -> str:
        return (
            f"CommandGroup(name={self.name!r}, module={self.module!r}, extra={self.extra!r}, "
            f"help={self.help!r})"
        )


# Top-level names -> where they live. Key and file commands are top level, like age's.
_AGE = "porchlight.age.cli"
GROUPS: tuple[CommandGroup, ...] = (
    CommandGroup("keygen", _AGE, None, "generate an age identity (post-quantum by default)"),
    CommandGroup("encrypt", _AGE, None, "encrypt a file to recipients or a passphrase"),
    CommandGroup("decrypt", _AGE, None, "decrypt an age file"),
    CommandGroup("rewrap", _AGE, None, "re-address an age file to new recipients, same payload"),
    CommandGroup("server", "app.cli", "server", "run and administer the community server"),
    CommandGroup("device", "device.cli", "device", "the camera agent on the Raspberry Pi"),
    CommandGroup(
        "audit", "porchlight.audit_cli", None, "verify, cosign and read the transparency log"
    ),
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


def _terminal_columns() -> int:
    """`shutil.get_terminal_size().columns`, without importing shutil (with bz2 and lzma)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    stdout = sys.__stdout__
    if stdout is None:
        return 80
    try:
        return os.get_terminal_size(stdout.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help layout; argparse builds one for every argument it adds."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _terminal_columns() - 2  # as argparse narrows shutil's width
        super().__init__(prog, indent_increment, max_help_position, width)


class _ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommand parsers (the same class) use _HelpFormatter too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _register(subparsers: Any, group: CommandGroup) -> None:
    """Import the group's module and have it add its parser (only group's, if it can)."""
    try:
        module = importlib.import_module(group.module)
    except ImportError as error:
        if group.extra is None:
            raise
        sub = subparsers.add_parser(group.name, help=group.help)
        sub.set_defaults(handler=_missing_extra(group, error))
        return
    register_command = getattr(module, "register_command", None)
    if register_command is not None:
        register_command(subparsers, group.name)
    else:
        module.register(subparsers)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="porchlight",
        description="Porchlight: neighbourhood cameras whose footage only the homeowner can open.",
    )
    parser.add_argument("--version", action="version", version=f"porchlight {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for group in GROUPS:  # in this order, so that help lists them so
        if group.name == wanted:
            _register(subparsers, group)
        elif group.name not in subparsers.choices:
            # Only listed; its module loads when it is used. Nothing parses with this
            # parser (the command named on the line is the one registered), so it goes
            # without the -h option, which costs a help formatter.
            subparsers.add_parser(group.name, help=group.help, add_help=False)
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
        # One line each, whatever a message quotes (a server's words, a file's name): shown
        # escaped, never obeyed by the terminal.
        print(f"porchlight: error: {shown(error.message)}", file=sys.stderr)
        if error.hint:
            print(f"porchlight: hint: {shown(error.hint)}", file=sys.stderr)
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
