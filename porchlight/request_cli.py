"""`porchlight request submit | status | close | download`: an agency's footage requests.

Spec: docs/requests-api.md ("Requester"). The warrant document never leaves the officer's
machine: only its SHA-256 is sent. Downloads stream each shared clip into a new, nameless
0600 file in the directory of ``<name>.age`` (an unguessable temporary name where the
filesystem cannot make nameless files), check its size and SHA-256 against the clip's
manifest (whose signature is checked first, with the per-ask key the server names) and only
then give it its name; with ``-i`` the clip is decrypted with the
agency identity into ``<name>.mp4`` the same way and its plaintext SHA-256 is checked against
the manifest. A re-run skips clips already downloaded and verified.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import httpx

from porchlight.age import (
    AgeError,
    Identity,
    PassphraseRequiredError,
    decryptor,
    read_identity_file,
)
from porchlight.age.cli import interrupt_on_termination
from porchlight.age.files import atomic_output
from porchlight.age.pipeline import write_all
from porchlight.cli import CommandError
from porchlight.client import (
    ALLOW_HTTP_FLAG,
    ApiError,
    PorchlightClient,
    ProgressBar,
    ResponseError,
    ServerURLError,
    validate_server_url,
)
from porchlight.manifest import ClipManifest, ManifestError, verify_manifest
from porchlight.text import shown

SERVER_ENV = "PORCHLIGHT_SERVER"
TOKEN_ENV = "PORCHLIGHT_TOKEN"  # noqa: S105 - the name of a variable, not a secret
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
T = TypeVar("T")


def make_client(server: str, token: str, *, allow_http: bool = False) -> PorchlightClient:
    """The HTTP client for one command (a seam for tests that record what the server says)."""
    return PorchlightClient(server, token=token, allow_http=allow_http)


def _client(args: argparse.Namespace) -> PorchlightClient:
    server = args.server or os.environ.get(SERVER_ENV)
    if not server:
        raise CommandError("no server given", hint=f"pass --server URL or set {SERVER_ENV}")
    try:
        validate_server_url(server, allow_http=args.allow_http)
    except ServerURLError as error:
        raise CommandError(str(error)) from None
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise CommandError(
            "no API token given",
            hint=f"pass --token TOKEN or set {TOKEN_ENV} (create one in "
            "the web app under your account)",
        )
    try:
        return make_client(server, token, allow_http=args.allow_http)
    except httpx.InvalidURL as error:
        raise CommandError(f"server {server!r} is not a valid URL: {error}") from None


def _api(server: str, call: Callable[[], T]) -> T:
    """Run one API call, turning refusals and network failures into clear one-line errors."""
    try:
        return call()
    except ApiError as error:
        hint = {
            401: f"the token was refused: check --token / {TOKEN_ENV}, or create a new token",
            403: "your account may not do this (requests are for requester accounts, "
            "and only for your own agency)",
            404: "no such request for your agency; 'porchlight request status' lists them",
        }.get(error.status_code)
        if error.status_code >= 500:
            raise CommandError(
                f"the server failed ({error.status_code}): {error.message}",
                hint="try again later, or tell the community's operator",
            ) from None
        raise CommandError(
            f"the server refused ({error.status_code}): {error.message}", hint=hint
        ) from None
    except ResponseError as error:
        raise CommandError(
            f"the server at {server} sent an unexpected answer: {error}",
            hint="check that the URL is the community's Porchlight server",
        ) from None
    except httpx.TransportError as error:
        raise CommandError(
            f"cannot reach the server at {server}: {error or type(error).__name__}",
            hint="check the URL and the network",
        ) from None


def _server(args: argparse.Namespace) -> str:
    return str(args.server or os.environ.get(SERVER_ENV) or "")


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _moment(text: str) -> str:
    """An RFC 3339 UTC time; a time without an offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time like 2026-11-22T14:00Z or 2026-11-22T14:00:00+01:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as error:
        raise CommandError(f"cannot read the warrant document: {error}") from None
    return digest.hexdigest()


def _show(request: dict[str, Any]) -> list[str]:
    lines = [f"request {request.get('id')}  {request.get('state')}"]
    warrant = request.get("warrant")
    if isinstance(warrant, dict):
        lines += [
            f"  warrant   {warrant.get('court')}, docket {warrant.get('docket_number')}, "
            f"judge {warrant.get('judge')}",
            f"            issued {warrant.get('issued_on')}, expires {warrant.get('expires_on')}",
            f"            document SHA-256 {warrant.get('document_sha256')}",
        ]
    lines += [
        f"  offence   {request.get('offence')}",
        f"  window    {request.get('window_start')} to {request.get('window_end')}",
    ]
    area = request.get("area")
    if isinstance(area, dict):
        lines.append(
            f"  area      {area.get('radius_m')} m around {area.get('lat')}, {area.get('lon')}"
        )
    for key in ("created_at", "deadline", "access_until", "closed_at"):
        if request.get(key):
            lines.append(f"  {key:<9} {request[key]}")
    return lines


def cmd_submit(args: argparse.Namespace) -> int:
    body = {
        "warrant": {
            "court": args.court,
            "docket_number": args.docket,
            "judge": args.judge,
            "issued_on": args.issued,
            "expires_on": args.expires,
            "document_sha256": _sha256_of(args.warrant_file),
        },
        "offence": args.offence,
        "window_start": args.window_from,
        "window_end": args.window_to,
        "area": {"lat": args.lat, "lon": args.lon, "radius_m": args.radius},
    }
    with _client(args) as client:
        created = _api(_server(args), lambda: client.call("POST", "/api/requests", body))
    if args.json:
        print(json.dumps(created, indent=1))
    else:
        print(
            shown(f"submitted request {created.get('id')} ({created.get('state')}); ")
            + "a reviewer checks the warrant before any resident is asked"
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.request is None:
            answer = _api(_server(args), lambda: client.call("GET", "/api/requests"))
        else:
            answer = _api(
                _server(args), lambda: client.call("GET", f"/api/requests/{args.request}")
            )
            shared = _api(
                _server(args), lambda: client.call("GET", f"/api/requests/{args.request}/shared")
            )
    if args.json:
        print(json.dumps(answer if args.request is None else answer | {"shared": shared}, indent=1))
        return 0
    if args.request is None:
        if not answer:
            print("no requests", file=sys.stderr)
        for item in answer:
            print(
                shown(
                    f"{item.get('id')}  {item.get('state'):<9}  {item.get('window_start')} to "
                    f"{item.get('window_end')}  {item.get('offence')}"
                )
            )
        return 0
    # Server text is shown escaped, so a server cannot drive the terminal (porchlight.text).
    print("\n".join(shown(line) for line in _show(answer)))
    if shared:
        print("  shared clips:")
        for item in shared:
            print(
                shown(
                    f"    {item.get('pseudonym')}  {item.get('start')} to {item.get('end')}  "
                    f"{int(item.get('size') or 0) / 1e6:.2f} MB"
                )
                + ("" if item.get("downloadable", True) else "  (no longer downloadable)")
            )
    else:
        print("  nothing shared (yet)")
    return 0


def cmd_close(args: argparse.Namespace) -> int:
    with _client(args) as client:
        closed = _api(
            _server(args), lambda: client.call("POST", f"/api/requests/{args.request}/close")
        )
    print(shown(f"request {closed.get('id')} is {closed.get('state')}"))
    return 0


def _read_identities(path: Path, passphrase_file: Path | None) -> Sequence[Identity]:
    try:
        try:
            return read_identity_file(path, None)
        except PassphraseRequiredError:
            if passphrase_file is not None:
                try:
                    text = passphrase_file.read_text(encoding="utf-8")
                except UnicodeDecodeError:
                    raise CommandError(f"{passphrase_file} is not UTF-8 text") from None
                passphrase = text.rstrip("\r\n")
            elif sys.stdin.isatty():
                passphrase = getpass.getpass("Agency identity passphrase: ")
            else:
                raise CommandError(
                    f"{path} is passphrase-protected and there is no terminal to ask on",
                    hint="pass --passphrase-file FILE",
                ) from None
            return read_identity_file(path, passphrase)
    except OSError as error:
        raise CommandError(f"cannot read the agency identity: {error}") from None
    except AgeError as error:
        raise CommandError(
            f"cannot open the agency identity: {error}", hint="check the passphrase"
        ) from None


def verify_shared(item: dict[str, Any]) -> tuple[ClipManifest, bytes]:
    """Check a shared clip's manifest against the per-ask key the server names for it."""
    document = item.get("manifest")
    if not isinstance(document, dict):
        raise ManifestError("the server sent no manifest")
    if "signature" not in document:
        document = document | {"signature": item.get("manifest_signature")}
    signed = json.dumps(document, sort_keys=True, indent=1).encode() + b"\n"
    signer = item.get("signer_public_key")
    if not isinstance(signer, str):
        raise ManifestError("the server named no signing key")
    return verify_manifest(signed, signer), signed


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _decrypt(
    source: Path, target: Path, identities: Sequence[Identity], manifest: ClipManifest
) -> None:
    digest = hashlib.sha256()
    try:
        # atomic_output: the footage is created 0600 without a name (or under an unguessable
        # temporary one) and named only once it matches the manifest; any failure drops it.
        with source.open("rb") as src, atomic_output(target) as out:
            reader = decryptor(src, identities)
            while chunk := reader.read(1 << 20):
                digest.update(chunk)
                write_all(out, chunk)
            if digest.hexdigest() != manifest.plaintext_sha256:
                raise CommandError(
                    f"{source.name}: the decrypted video does not match its signed manifest",
                    hint="the resident's camera signed a different video; "
                    "report it to the community",
                )
    except AgeError as error:
        raise CommandError(
            f"cannot decrypt {source.name}: {error}",
            hint="is this the identity of the agency that filed the request?",
        ) from None
    except OSError as error:
        raise CommandError(f"cannot write {target}: {error.strerror or error}") from None


def _fetch(
    client: PorchlightClient, path: str, handle: BinaryIO, bar: ProgressBar
) -> Callable[[], tuple[int, str]]:
    return lambda: client.download(path, handle, bar)


def cmd_download(args: argparse.Namespace) -> int:
    interrupt_on_termination()
    out_dir: Path = args.output
    identities = _read_identities(args.identity, args.passphrase_file) if args.identity else None
    server = _server(args)
    with _client(args) as client:
        shared = _api(server, lambda: client.call("GET", f"/api/requests/{args.request}/shared"))
        if not shared:
            print(f"nothing has been shared with request {args.request}", file=sys.stderr)
            return 0
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CommandError(
                f"cannot use {out_dir} as the output directory: {error.strerror}",
                hint="-o names a directory (made if missing)",
            ) from None
        failures: list[str] = []
        for item in shared:
            label = str(item.get("pseudonym") or "resident")
            try:
                manifest, signed = verify_shared(item)
            except ManifestError as error:
                failures.append(f"{label}: manifest does not verify ({error}); not downloaded")
                continue
            name = f"{_UNSAFE.sub('-', label).strip('-')}-{manifest.clip_id}"
            target = out_dir / f"{name}.age"
            if not (target.exists() and _sha256_file(target) == manifest.ciphertext_sha256):
                if not item.get("downloadable", True):
                    print(
                        f"porchlight: {label}: {manifest.clip_id} is no longer downloadable",
                        file=sys.stderr,
                    )
                    continue
                bar = ProgressBar(f"{name}.age")
                path = f"/api/requests/{args.request}/shared/{item['shared_clip_id']}"
                # Into a new, nameless 0600 file (a fixed `.partial` name could be a link
                # someone planted), named only if it matches.
                try:
                    with atomic_output(target) as handle:
                        size, sha256 = _api(server, _fetch(client, path, handle, bar))
                        bar.finish(size)
                        if (size, sha256) != (
                            manifest.ciphertext_size,
                            manifest.ciphertext_sha256,
                        ):
                            raise _Mismatch
                except _Mismatch:
                    failures.append(
                        f"{label}: {manifest.clip_id} does not match its signed manifest "
                        "(size or SHA-256); discarded"
                    )
                    continue
                except OSError as error:
                    detail = error.strerror or error
                    raise CommandError(f"cannot write {target}: {detail}") from None
            (out_dir / f"{name}.manifest.json").write_bytes(signed)
            line = f"{target}  {manifest.start} to {manifest.end}  signature and SHA-256 verified"
            if identities is not None:
                video = out_dir / f"{name}.mp4"
                _decrypt(target, video, identities, manifest)
                line = f"{video}  {manifest.start} to {manifest.end}  decrypted and verified"
            print(line)
    for failure in failures:
        print(f"porchlight: {failure}", file=sys.stderr)
    if failures:
        raise CommandError(f"{len(failures)} shared clip(s) could not be verified or downloaded")
    return 0


class _Mismatch(Exception):
    """A downloaded clip's size or SHA-256 differs from its signed manifest."""


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help=f"server URL (default: ${SERVER_ENV})")
    parser.add_argument(
        "--token",
        help=f"API token; prefer setting ${TOKEN_ENV}, since other local users can read a "
        "command line (ps, /proc) and it stays in shell history",
    )
    parser.add_argument(
        ALLOW_HTTP_FLAG,
        action="store_true",
        help="allow a plain http:// server that is not this machine (the token then crosses "
        "the network unencrypted: only on a network you trust)",
    )


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("request", help="file and follow footage requests")
    commands = group.add_subparsers(dest="request_command", metavar="COMMAND")
    group.set_defaults(handler=lambda _args: group.print_help() or 2)

    submit = commands.add_parser("submit", help="file a warrant-backed footage request")
    _connection(submit)
    submit.add_argument("--court", required=True, help="the issuing court")
    submit.add_argument("--docket", required=True, help="the warrant's docket or case number")
    submit.add_argument("--judge", required=True, help="the issuing judge")
    submit.add_argument("--issued", required=True, type=_day, help="warrant issue date YYYY-MM-DD")
    submit.add_argument("--expires", required=True, type=_day, help="warrant expiry YYYY-MM-DD")
    submit.add_argument(
        "--warrant-file",
        required=True,
        type=Path,
        help="the warrant document: only its SHA-256 is sent, never the file",
    )
    submit.add_argument("--offence", required=True, help="the offence under investigation")
    submit.add_argument(
        "--from",
        dest="window_from",
        required=True,
        type=_moment,
        help="window start, RFC 3339 (UTC if no offset)",
    )
    submit.add_argument(
        "--to", dest="window_to", required=True, type=_moment, help="window end, RFC 3339"
    )
    submit.add_argument("--lat", required=True, type=float, help="area centre latitude")
    submit.add_argument("--lon", required=True, type=float, help="area centre longitude")
    submit.add_argument("--radius", required=True, type=int, help="area radius in metres")
    submit.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    submit.set_defaults(handler=cmd_submit)

    status = commands.add_parser("status", help="your agency's requests, or one in full")
    _connection(status)
    status.add_argument("request", nargs="?", help="a request id (omit to list all)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)

    close = commands.add_parser("close", help="close a request: no further asks are answered")
    _connection(close)
    close.add_argument("request", help="the request id")
    close.set_defaults(handler=cmd_close)

    download = commands.add_parser(
        "download", help="download, verify and (with -i) decrypt what residents shared"
    )
    _connection(download)
    download.add_argument("request", help="the request id")
    download.add_argument("-o", "--output", type=Path, default=Path("."), help="directory")
    download.add_argument(
        "-i", "--identity", type=Path, help="the agency's age identity file: decrypt to .mp4"
    )
    download.add_argument(
        "--passphrase-file", type=Path, help="passphrase for a protected identity file"
    )
    download.set_defaults(handler=cmd_download)
