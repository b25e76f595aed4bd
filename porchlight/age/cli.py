"""`porchlight keygen | encrypt | decrypt | rewrap`: age files from the command line.

Flags mirror age's so habits carry over: `-r/-R` recipients, `-i` identity files (several
keys a file, `#` comments), `-p` passphrase, `-a` armor, `-o` output, standard input and
output by default. Passphrases come from `--passphrase-file` (first line) or a prompt on
the terminal; they are never accepted as an argument, where `ps` would show them.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any, BinaryIO

from porchlight.age.api import decryptor, encryptor, rewrap
from porchlight.age.errors import (
    AgeError,
    AuthenticationError,
    MalformedError,
    NoMatchError,
    PassphraseRequiredError,
)
from porchlight.age.files import (
    WholeWriter,
    atomic_output,
    decrypt_file,
    encrypt_file,
    identity_file_text,
    is_encrypted_identity,
    read_identity_file,
    spelled_as_pathlib,
    write_identity_file,
)
from porchlight.age.keys import (
    HybridIdentity,
    Identity,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    generate_identity,
    parse_recipient,
)
from porchlight.age.pipeline import write_all
from porchlight.cli import CommandError

_COPY_SIZE = 1024 * 1024
_PROGRESS_FROM = 64 * 1024 * 1024


def register(subparsers: Any) -> None:
    """Add all four commands."""
    for add in _COMMANDS.values():
        add(subparsers)


def register_command(subparsers: Any, name: str) -> None:
    """Add only the named command: `porchlight encrypt` does not build the other parsers."""
    _COMMANDS[name](subparsers)


def _add_keygen(subparsers: Any) -> None:
    keygen = subparsers.add_parser(
        "keygen",
        help="generate an age identity (post-quantum by default)",
        description="Generate an identity. Post-quantum (age1pq1...) unless --x25519.",
    )
    kind = keygen.add_mutually_exclusive_group()
    kind.add_argument(
        "--pq",
        dest="kind",
        action="store_const",
        const="pq",
        default="pq",
        help="hybrid ML-KEM-768 + X25519 identity (the default)",
    )
    kind.add_argument(
        "--x25519",
        dest="kind",
        action="store_const",
        const="x25519",
        help="classic X25519 identity (readable by age before v1.3)",
    )
    keygen.add_argument("-o", "--output", metavar="FILE", help="write the identity here (0600)")
    keygen.add_argument(
        "-y",
        metavar="FILE",
        dest="convert",
        help="print the recipients of the identities in FILE ('-' for stdin)",
    )
    keygen.add_argument(
        "-p",
        "--passphrase",
        action="store_true",
        help="protect the identity file with a passphrase (scrypt)",
    )
    keygen.add_argument("--passphrase-file", metavar="F", help="read the passphrase from F")
    keygen.set_defaults(handler=_keygen)


def _add_encrypt(subparsers: Any) -> None:
    encrypt = subparsers.add_parser(
        "encrypt",
        help="encrypt a file to recipients or a passphrase",
        description="Encrypt IN (default: standard input) to OUT (default: standard output).",
    )
    encrypt.add_argument(
        "-r",
        "--recipient",
        action="append",
        default=[],
        metavar="RECIPIENT",
        help="an age1... or age1pq1... recipient (repeatable)",
    )
    encrypt.add_argument(
        "-R",
        "--recipients-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a file of recipients, one a line (repeatable)",
    )
    encrypt.add_argument(
        "-p",
        "--passphrase",
        action="store_true",
        help="encrypt with a passphrase instead of recipients",
    )
    encrypt.add_argument("--passphrase-file", metavar="F", help="read the passphrase from F")
    encrypt.add_argument("-a", "--armor", action="store_true", help="write PEM-armored text")
    encrypt.add_argument("-o", "--output", metavar="OUT", help="output file")
    encrypt.add_argument("input", nargs="?", metavar="IN", help="input file")
    encrypt.set_defaults(handler=_encrypt)


def _add_decrypt(subparsers: Any) -> None:
    decrypt = subparsers.add_parser(
        "decrypt",
        help="decrypt an age file",
        description="Decrypt IN (default: standard input) to OUT (default: standard output).",
    )
    decrypt.add_argument(
        "-i",
        "--identity",
        action="append",
        default=[],
        metavar="IDENTITY",
        help="an identity file, possibly passphrase-protected (repeatable)",
    )
    decrypt.add_argument(
        "--passphrase-file",
        metavar="F",
        help="passphrase for the file, or for protected identity files",
    )
    decrypt.add_argument("-o", "--output", metavar="OUT", help="output file")
    decrypt.add_argument("input", nargs="?", metavar="IN", help="input file")
    decrypt.set_defaults(handler=_decrypt)


def _add_rewrap(subparsers: Any) -> None:
    rewrap_cmd = subparsers.add_parser(
        "rewrap",
        help="re-address an age file to new recipients, same payload",
        description="Write IN with a new header for the given recipients; the payload bytes "
        "stay identical.",
    )
    rewrap_cmd.add_argument(
        "-i",
        "--identity",
        action="append",
        required=True,
        metavar="IDENTITY",
        help="an identity file that opens IN",
    )
    rewrap_cmd.add_argument(
        "-r",
        "--recipient",
        action="append",
        default=[],
        metavar="RECIPIENT",
        help="a new recipient (repeatable)",
    )
    rewrap_cmd.add_argument(
        "-R",
        "--recipients-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a file of new recipients",
    )
    rewrap_cmd.add_argument(
        "--passphrase-file", metavar="F", help="passphrase for protected identity files"
    )
    rewrap_cmd.add_argument("-a", "--armor", action="store_true", help="write PEM-armored text")
    rewrap_cmd.add_argument("-o", "--output", metavar="OUT", help="output file")
    rewrap_cmd.add_argument("input", metavar="IN", help="the age file to re-address")
    rewrap_cmd.set_defaults(handler=_rewrap)


_COMMANDS: dict[str, Callable[[Any], None]] = {
    "keygen": _add_keygen,
    "encrypt": _add_encrypt,
    "decrypt": _add_decrypt,
    "rewrap": _add_rewrap,
}


# --- helpers ----------------------------------------------------------------------------------


def _age_error(error: AgeError, kept_nothing: bool = True) -> CommandError:
    tampered = "the file was corrupted or tampered with; " + (
        "no output was kept"
        if kept_nothing
        else "what was already written is incomplete and unauthenticated: discard it"
    )
    hints: dict[type[AgeError], str] = {
        NoMatchError: "check that you gave the identity (or passphrase) the file was made for",
        AuthenticationError: tampered,
        MalformedError: "is this an age file? It may be damaged or truncated",
        PassphraseRequiredError: "give --passphrase-file F, or run on a terminal to be asked",
    }
    return CommandError(str(error), hint=hints.get(type(error)))


def _passphrase(args: argparse.Namespace, prompt: str, confirm: bool = False) -> str:
    if args.passphrase_file:
        try:
            with open(args.passphrase_file, encoding="utf-8") as handle:
                value = handle.readline().rstrip("\r\n")
        except OSError as error:
            raise CommandError(f"cannot read the passphrase file: {error.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError("the passphrase file is not UTF-8 text") from None
        if not value:
            raise CommandError("the passphrase file is empty")
        return value
    try:
        # getpass talks to /dev/tty, so this works even when stdin and stdout are files.
        with open("/dev/tty", "rb"):
            pass
    except OSError:
        raise CommandError(
            "a passphrase is needed but there is no terminal to ask on",
            hint="give --passphrase-file F",
        ) from None
    import getpass  # only when prompting: not worth its import time on every command

    value = getpass.getpass(prompt)
    if not value:
        raise CommandError("the passphrase is empty")
    if confirm and getpass.getpass("Confirm passphrase: ") != value:
        raise CommandError("the passphrases do not match")
    return value


def _read_identities(args: argparse.Namespace) -> list[Identity]:
    identities: list[Identity] = []
    passphrase: str | None = None
    for path in args.identity:
        try:
            with open(spelled_as_pathlib(path), "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise CommandError(f"cannot read identity file {path}: {error.strerror}") from None
        if is_encrypted_identity(data) and passphrase is None:
            passphrase = _passphrase(args, f"Passphrase for identity file {path}: ")
        try:
            identities.extend(read_identity_file(path, passphrase))
        except NoMatchError:
            raise CommandError(f"the passphrase does not unlock the identity file {path}") from None
        except AgeError as error:
            raise _age_error(error) from None
    return identities


def _recipient_lines(path: str) -> Iterator[tuple[int, str]]:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(spelled_as_pathlib(path), encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"cannot read recipients file {path}: {error}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def _read_recipients(args: argparse.Namespace) -> list[Recipient]:
    recipients: list[Recipient] = []
    for text in args.recipient:
        try:
            recipients.append(parse_recipient(text))
        except AgeError as error:
            raise CommandError(f"invalid recipient {text!r}: {error}") from None
    for path in args.recipients_file:
        for number, line in _recipient_lines(path):
            try:
                recipients.append(parse_recipient(line))
            except AgeError as error:
                raise CommandError(f"{path} line {number}: {error}") from None
    return recipients


def _progress(verb: str, path: str | None) -> Callable[[int], None] | None:
    if path is None or not sys.stderr.isatty():
        return None
    try:
        total = os.path.getsize(path)
    except OSError:
        return None
    if total < _PROGRESS_FROM:
        return None
    shown = -1

    def report(done: int) -> None:
        nonlocal shown
        percent = min(100, done * 100 // max(total, 1))
        if percent != shown:
            shown = percent
            end = "\n" if percent == 100 else ""
            print(f"\rporchlight: {verb} {percent:3d}%", end=end, file=sys.stderr, flush=True)

    return report


@contextmanager
def _input(path: str | None) -> Iterator[BinaryIO]:
    if path is None or path == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as error:
        raise CommandError(f"cannot open {path}: {error.strerror}") from None
    with handle:
        yield handle


@contextmanager
def _output(path: str | None, binary_to_terminal_ok: bool) -> Iterator[BinaryIO]:
    if path is None or path == "-":
        if not binary_to_terminal_ok and sys.stdout.isatty():
            raise CommandError(
                "refusing to write binary output to the terminal",
                hint="use -o FILE, or -a for armored text",
            )
        sys.stdout.flush()
        # Straight to the descriptor, so a short write (a full disk, a file-size limit)
        # raises instead of being dropped somewhere in the buffered stack.
        with WholeWriter(sys.stdout.fileno(), "wb", closefd=False) as handle:
            try:
                yield handle
            except OSError as error:
                raise CommandError(
                    f"cannot write to standard output: {error.strerror}",
                    hint="what was already written is incomplete",
                ) from None
        return
    try:
        with atomic_output(path) as handle:
            yield handle
    except OSError as error:
        raise CommandError(f"cannot write {path}: {error.strerror}") from None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def interrupt_on_termination() -> None:
    """Treat SIGTERM and SIGHUP like Ctrl-C.

    Their default action ends the process at once, leaving a half-written `.partial`
    file of plaintext behind; as KeyboardInterrupt they unwind through the same cleanup
    as SIGINT, and the command exits 130. SIGKILL cannot be caught: after `kill -9` a
    temporary file can remain (its name starts with a dot and ends in `.partial`).
    """
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)


def _warn_if_others_can_read_stdout() -> None:
    """`keygen > file`: the shell made the file with its umask, often world-readable."""
    try:
        info = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return
    if stat.S_ISREG(info.st_mode) and info.st_mode & 0o004:
        print(
            "porchlight: warning: writing the secret key to a file others can read",
            file=sys.stderr,
        )
        print("porchlight: hint: use -o FILE, which creates it with mode 0600", file=sys.stderr)


def _reader_went_away() -> int:
    """Standard output's reader closed the pipe (`| head`): stop quietly, as age does."""
    # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 1


def _replaces(path: str | None) -> bool:
    """Whether output to path is renamed into place (so nothing is kept on failure)."""
    if not _is_file(path):
        return False
    try:
        return stat.S_ISREG(os.stat(str(path)).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _is_file(path: str | None) -> bool:
    return path is not None and path != "-"


def _copy(src: BinaryIO | io.RawIOBase, dst: BinaryIO) -> None:
    while block := src.read(_COPY_SIZE):
        write_all(dst, block)


# --- commands -----------------------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    if args.convert:
        return _keygen_convert(args)
    identity = generate_identity(args.kind)
    protect = args.passphrase or bool(args.passphrase_file)
    if args.output:
        # Checked again, race-free, when the file is linked into place; this early check
        # only saves typing a passphrase for nothing.
        if os.path.lexists(args.output):
            raise CommandError(f"{args.output} already exists; not overwriting a key")
        passphrase = (
            _passphrase(args, "Passphrase for the new identity: ", confirm=True)
            if protect
            else None
        )
        try:
            write_identity_file(args.output, identity, passphrase, overwrite=False)
        except FileExistsError:
            raise CommandError(f"{args.output} already exists; not overwriting a key") from None
        except OSError as error:
            raise CommandError(f"cannot write {args.output}: {error.strerror}") from None
    else:
        if protect:
            raise CommandError("a protected identity must go to a file", hint="add -o FILE")
        _warn_if_others_can_read_stdout()
        try:
            sys.stdout.write(identity_file_text(identity))
            sys.stdout.flush()
        except BrokenPipeError:
            return _reader_went_away()
    print(f"Public key: {identity.recipient()}", file=sys.stderr)
    return 0


def _keygen_convert(args: argparse.Namespace) -> int:
    path: str = args.convert
    if path == "-":
        from porchlight.age.keys import parse_identities

        try:
            identities: Sequence[X25519Identity | HybridIdentity] = parse_identities(
                sys.stdin.read()
            )
        except AgeError as error:
            raise _age_error(error) from None
    else:
        args.identity = [path]
        identities = [
            i for i in _read_identities(args) if isinstance(i, X25519Identity | HybridIdentity)
        ]
    try:
        for identity in identities:
            print(identity.recipient())
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_went_away()
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    interrupt_on_termination()
    recipients = _read_recipients(args)
    if args.passphrase or args.passphrase_file:
        if recipients:
            raise CommandError("-p (passphrase) cannot be combined with -r or -R recipients")
        recipients = [ScryptRecipient(_passphrase(args, "Passphrase: ", confirm=True))]
    if not recipients:
        raise CommandError("no recipients", hint="use -r RECIPIENT, -R FILE, or -p")
    try:
        if _is_file(args.input) and _is_file(args.output):
            encrypt_file(
                args.input,
                args.output,
                recipients,
                armor=args.armor,
                progress=_progress("encrypting", args.input),
            )
            return 0
        with (
            _input(args.input) as src,
            _output(args.output, args.armor) as dst,
            encryptor(dst, recipients, armor=args.armor) as writer,
        ):
            # The writer buffers whole chunks; dst (WholeWriter) never writes short.
            while block := src.read(_COPY_SIZE):
                writer.write(block)
    except AgeError as error:
        raise _age_error(error) from None
    except OSError as error:
        raise CommandError(f"{error.filename or 'I/O'}: {error.strerror}") from None
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    interrupt_on_termination()
    identities: list[Identity]
    if args.identity:
        identities = _read_identities(args)
    else:
        identities = [ScryptIdentity(_passphrase(args, "Passphrase: "))]
    kept_nothing = _replaces(args.output)
    try:
        if _is_file(args.input) and _is_file(args.output):
            decrypt_file(
                args.input, args.output, identities, progress=_progress("decrypting", args.input)
            )
            return 0
        with _input(args.input) as src:
            reader = decryptor(src, identities)
            with _output(args.output, True) as dst:
                _copy(reader, dst)
    except AgeError as error:
        raise _age_error(error, kept_nothing) from None
    except OSError as error:
        raise CommandError(f"{error.filename or 'I/O'}: {error.strerror}") from None
    return 0


def _rewrap(args: argparse.Namespace) -> int:
    interrupt_on_termination()
    recipients = _read_recipients(args)
    if not recipients:
        raise CommandError("no new recipients", hint="use -r RECIPIENT or -R FILE")
    identities = _read_identities(args)
    try:
        with _input(args.input) as src, _output(args.output, args.armor) as dst:
            rewrap(src, dst, identities, recipients, armor=args.armor)
    except AgeError as error:
        raise _age_error(error) from None
    except OSError as error:
        raise CommandError(f"{error.filename or 'I/O'}: {error.strerror}") from None
    return 0
