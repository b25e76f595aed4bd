"""`porchlight audit`: verify, cosign and read the transparency log, trusting nothing but keys.

Subcommands:

    verify   (--server URL [--token TOKEN] | --dir DIR) --key VKEY [--origin ORIGIN]
             [--state FILE] [--checkpoint FILE] [--witness VKEY ...] [--all-tiles]
             [--allow-http]
    cosign   --server URL --key VKEY [--origin ORIGIN] --signer-key FILE [--state FILE]
             [--token TOKEN] [--allow-http]
    timeline REQUEST_ID --server URL [--token TOKEN] [--allow-http]
    export   --server URL --format jsonl|csv [-o FILE] [--token TOKEN] [--allow-http]
    keygen   --name NAME -o FILE [--type witness|log]

The HTTP contract these rely on (the server implements it; nothing else is assumed):

- The log is a c2sp.org/tlog-tiles log under `{server}/log/`: `GET /log/checkpoint` (the
  signed checkpoint, auditors' cosignatures appended) and `GET /log/tile/<L>/<N>[.p/<W>]`
  (hash tiles) need no login; `GET /log/tile/entries/<N>[.p/<W>]` (entry bundles: every
  entry's bytes, including who was asked and who declined) needs an auditor's
  `Authorization: Bearer <token>` and answers 401/403 without one (DESIGN promise 3; see
  docs/log-format.md). 404 for a tile that does not exist. Verifying a copy on disk (`--dir`)
  needs no token.
- `POST /log/cosignatures` with JSON `{"checkpoint": <the checkpoint note text as fetched>,
  "cosignature": <one signature line "— <name> <base64>", no newline>}`. The cosignature is a
  c2sp.org/tlog-cosignature (type 0x04) signature over that checkpoint's body by a witness key
  the server knows. The server answers 2xx when it accepted it; 4xx with the server's JSON
  error `{"error": ..., "message": ...}` otherwise (unknown witness, bad signature, stale or
  unknown checkpoint, or inconsistent with the last checkpoint this witness cosigned).
- `GET /api/log/entries?subject=<subject>` and `GET /api/log/entries?start=<index>&limit=<n>`
  with `Authorization: Bearer <token>`: JSON, either a list of entries or an object whose
  `entries` key is that list. Each entry is an object with at least `index` (int), `time`
  (RFC 3339 string), `actor`, `action`, `subject` (strings) and `details` (object). Paged
  results are in index order; a page shorter than `limit` is the last one.

The token comes from `--token` or the PORCHLIGHT_TOKEN environment variable; it is sent only to
the given server (its /log reads and /api endpoints) and never printed. `verify --server` and
`cosign` run without one until the server refuses the entry bundles, then stop with an error
and a hint. A token is never sent over plain http:// to a host other than this machine unless
--allow-http is given (porchlight.client.validate_server_url); without a token nothing secret
is sent (checkpoints, tiles and cosignatures are public, and everything read is checked against
the keys), so `verify` and `cosign` then take any http(s) URL.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx

from porchlight.cli import CommandError
from porchlight.client import ALLOW_HTTP_FLAG, ServerURLError, validate_server_url
from porchlight.files import write_atomically
from porchlight.tlog.checkpoint import CheckpointError, cosign, verified_cosignatures
from porchlight.tlog.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    CosignatureSigner,
    CosignatureVerifier,
    NoteError,
    generate_signer,
    parse_signer_key,
    parse_verifier_key,
)
from porchlight.tlog.verify import (
    DirectorySource,
    HttpSource,
    ReadRefused,
    TileSource,
    VerifiedLog,
    VerifyError,
    WrongOrigin,
    load_state,
    save_state,
    verify_log,
)

EXPORT_PAGE_SIZE = 1000
_VERIFY_DESCRIPTION = """\
Verify the whole log, trusting only the log's verifier key (--key):

1. the checkpoint carries a valid signature by that key, and is for the expected log: its
   origin must be the key's name (c2sp.org/tlog-checkpoint), or the one given with --origin;
2. every entry bundle up to the checkpoint's size is read, every entry re-hashed (RFC 6962
   leaf hash), the whole Merkle tree rebuilt, and its root must equal the signed root: the
   signed checkpoint commits to exactly these entries;
3. every hash tile above level 0 (tile/1/..., tile/2/...) must equal the rebuilt tree;
4. the level-0 hash tiles (the log's own record of each leaf hash) must equal the
   re-hashed entries. With --dir they are always compared. With --server they are read
   only when step 2 or an entry bundle fails, to name the first bad entry, unless
   --all-tiles: a wrong level-0 tile cannot make a false entry or proof pass (anyone
   using it checks it against the signed root that step 2 vouches for), so skipping them
   halves the requests without weakening what is vouched for;
5. against the state file (--state) of the last successful run: the new tree contains the
   old one (same root at the old size) and the checkpoint did not roll back. A fork (a
   rewritten history re-signed with the log's key) is named by its first differing
   256-entry block or entry. An older checkpoint given with --checkpoint must be a prefix
   of the history verified before; one whose last entries fall in a 256-entry block that
   the state keeps only as a hash is checked with that block's complete tile from --dir or
   --server, and refused as uncheckable if there is none (use the log it was taken from).

Failures name the first bad entry, tile or checkpoint, exit non-zero and leave the state
file untouched. --witness additionally requires a valid cosignature by each given key."""
_ORIGIN_HELP = "the log's origin (checkpoint first line) to expect (default: the key's name)"
_ALLOW_HTTP_HELP = (
    "send the token to a plain http:// server that is not this machine (it then crosses the "
    "network unencrypted: only on a network you trust)"
)
_TIMEOUT = 30.0


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser(
        "audit",
        help="verify, cosign and read the transparency log",
        description="Verify, cosign and read the transparency log.",
    )
    commands = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)

    verify = commands.add_parser(
        "verify",
        help="verify the whole log and its consistency",
        description=_VERIFY_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = verify.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="server base URL (the log is under {server}/log/)")
    where.add_argument("--dir", type=Path, help="a directory of tiles and checkpoints")
    verify.add_argument("--key", required=True, help="the log's verifier key (name+id+key)")
    verify.add_argument("--origin", help=_ORIGIN_HELP)
    verify.add_argument(
        "--token", help="an auditor's API token, for --server (default: $PORCHLIGHT_TOKEN)"
    )
    verify.add_argument("--state", type=Path, help="where the last verified checkpoint is kept")
    verify.add_argument("--checkpoint", type=Path, help="verify this checkpoint file instead")
    verify.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY",
        help="require a valid cosignature by this witness key (repeatable)",
    )
    verify.add_argument(
        "--all-tiles",
        action="store_true",
        help="with --server, also fetch and compare every level-0 hash tile (always done "
        "with --dir); about twice the requests",
    )
    verify.add_argument(ALLOW_HTTP_FLAG, action="store_true", help=_ALLOW_HTTP_HELP)
    verify.set_defaults(handler=_verify)

    cosign_cmd = commands.add_parser("cosign", help="verify, then cosign and submit")
    cosign_cmd.add_argument("--server", required=True, help="server base URL")
    cosign_cmd.add_argument("--key", required=True, help="the log's verifier key")
    cosign_cmd.add_argument("--origin", help=_ORIGIN_HELP)
    cosign_cmd.add_argument(
        "--signer-key", required=True, type=Path, help="file holding your witness signer key"
    )
    cosign_cmd.add_argument("--state", type=Path, help="where the last verified checkpoint is kept")
    cosign_cmd.add_argument("--token", help="an auditor's API token (default: $PORCHLIGHT_TOKEN)")
    cosign_cmd.add_argument(ALLOW_HTTP_FLAG, action="store_true", help=_ALLOW_HTTP_HELP)
    cosign_cmd.set_defaults(handler=_cosign)

    timeline = commands.add_parser("timeline", help="every log entry about one request")
    timeline.add_argument("request_id", metavar="REQUEST_ID")
    timeline.add_argument("--server", required=True, help="server base URL")
    timeline.add_argument("--token", help="API token (default: $PORCHLIGHT_TOKEN)")
    timeline.add_argument(ALLOW_HTTP_FLAG, action="store_true", help=_ALLOW_HTTP_HELP)
    timeline.set_defaults(handler=_timeline)

    export = commands.add_parser("export", help="export every log entry")
    export.add_argument("--server", required=True, help="server base URL")
    export.add_argument("--format", required=True, choices=("jsonl", "csv"))
    export.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")
    export.add_argument("--token", help="API token (default: $PORCHLIGHT_TOKEN)")
    export.add_argument(ALLOW_HTTP_FLAG, action="store_true", help=_ALLOW_HTTP_HELP)
    export.set_defaults(handler=_export)

    keygen = commands.add_parser("keygen", help="generate a witness (or log) signing key")
    keygen.add_argument("--name", required=True, help="key name, e.g. auditor.example.org/a1")
    keygen.add_argument("-o", "--output", required=True, type=Path, help="signer key file")
    keygen.add_argument(
        "--type",
        choices=("witness", "log"),
        default="witness",
        help="witness: cosignature/v1 (0x04, default); log: plain Ed25519 (0x01)",
    )
    keygen.set_defaults(handler=_keygen)


def _progress(stage: str, done: int, total: int) -> None:
    print(f"\rporchlight: {stage} {done}/{total}", end="", file=sys.stderr, flush=True)
    if done >= total:
        print(file=sys.stderr)


def _default_state_path(vkey: str) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    name = re.sub(r"[^A-Za-z0-9.+-]", "_", "+".join(vkey.strip().split("+")[:2]))
    return base / "porchlight" / "audit" / f"{name}.json"


def _run_verify(
    source: TileSource,
    vkey: str,
    state_path: Path,
    checkpoint: Path | None,
    *,
    origin: str | None = None,
    witnesses: Sequence[CosignatureVerifier] = (),
    leaf_tiles: bool = False,
) -> VerifiedLog:
    """Verify, check the required cosignatures, and only then save the new state: any
    failure leaves the state file as it was."""
    try:
        previous = load_state(state_path)
        checkpoint_text = None
        if checkpoint is not None:
            try:
                checkpoint_text = checkpoint.read_bytes()
            except OSError as error:
                raise CommandError(f"cannot read checkpoint {checkpoint}: {error}") from error
        result = verify_log(
            source,
            vkey,
            checkpoint_text=checkpoint_text,
            origin=origin,
            previous=previous,
            allow_older=checkpoint is not None,
            leaf_tiles=leaf_tiles or not isinstance(source, HttpSource),
            progress=_progress,
        )
    except ReadRefused as refused:
        raise CommandError(
            f"the server refused to serve the log (HTTP {refused.status} for {refused.url})",
            hint=(
                "entry bundles are served to auditors only: pass an auditor's API token with "
                "--token or PORCHLIGHT_TOKEN"
                if refused.status == 401
                else "this token may not read the log's entries: use an auditor's API token"
            ),
        ) from None
    except WrongOrigin as error:
        raise CommandError(
            f"log verification failed: {error.message}",
            hint="check --key; if this key really signs for that log, pass --origin",
        ) from error
    except VerifyError as error:
        raise CommandError(
            f"log verification failed: {error.message}",
            hint="keep the state file and this output: it is evidence",
        ) from error
    _check_witnesses(result, witnesses)
    if previous is None or result.state.size >= previous.size:
        try:
            save_state(state_path, result.state)
        except OSError as error:
            raise CommandError(
                f"the log verified, but the state file {state_path} cannot be written: {error}",
                hint="pass a writable --state FILE",
            ) from error
    return result


def _check_witnesses(result: VerifiedLog, witnesses: Sequence[CosignatureVerifier]) -> None:
    if not witnesses:
        return
    try:
        cosigned = {w for w, _ in verified_cosignatures(result.checkpoint_text, witnesses)}
    except CheckpointError as error:
        raise CommandError(f"log verification failed: cosignature: {error}") from error
    missing = [w.name for w in witnesses if w not in cosigned]
    if missing:
        raise CommandError(f"checkpoint is not cosigned by {', '.join(missing)}")


def _summary(result: VerifiedLog) -> str:
    checkpoint = result.checkpoint
    root = result.state.to_json()["root_hash"]
    line = f"verified {checkpoint.origin}: size {checkpoint.size}, root {root}"
    if result.previous is not None:
        line += f" (consistent with size {result.previous.size} verified before)"
    return line


def _log_client() -> httpx.Client:
    return httpx.Client(timeout=_TIMEOUT)


def _optional_token(args: argparse.Namespace) -> str | None:
    token: str | None = args.token or os.environ.get("PORCHLIGHT_TOKEN") or None
    return token


def _check_server(args: argparse.Namespace, token: str | None) -> None:
    """Refuse to send a token in clear text: see validate_server_url. Without one, nothing
    secret is sent and every byte read is checked against keys, so plain HTTP is harmless."""
    try:
        validate_server_url(args.server, allow_http=args.allow_http or not token)
    except ServerURLError as error:
        raise CommandError(str(error)) from None


def _http_source(server: str, token: str | None) -> HttpSource:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return HttpSource(f"{server.rstrip('/')}/log", headers=headers, timeout=_TIMEOUT)
    except VerifyError as error:
        raise CommandError(f"--server: {error.message}") from None


def _source(args: argparse.Namespace) -> TileSource:
    if args.dir is not None:
        if not args.dir.is_dir():
            raise CommandError(f"{args.dir} is not a directory")
        return DirectorySource(args.dir)
    token = _optional_token(args)
    _check_server(args, token)
    return _http_source(args.server, token)


def _verify(args: argparse.Namespace) -> int:
    witnesses: list[CosignatureVerifier] = []
    for vkey in args.witness:
        witness = _parse_vkey(vkey)
        if not isinstance(witness, CosignatureVerifier):
            raise CommandError(f"--witness {vkey} is not a cosignature (type 0x04) key")
        witnesses.append(witness)
    _parse_vkey(args.key)
    state_path = args.state or _default_state_path(args.key)
    source = _source(args)
    try:
        result = _run_verify(
            source,
            args.key,
            state_path,
            args.checkpoint,
            origin=args.origin,
            witnesses=witnesses,
            leaf_tiles=args.all_tiles,
        )
    finally:
        if isinstance(source, HttpSource):
            source.close()
    print(_summary(result))
    return 0


def _parse_vkey(vkey: str) -> Any:
    try:
        return parse_verifier_key(vkey)
    except NoteError as error:
        raise CommandError(f"bad verifier key {vkey!r}: {error}") from error


def _cosign(args: argparse.Namespace) -> int:
    _parse_vkey(args.key)
    try:
        signer = parse_signer_key(args.signer_key.read_text())
    except OSError as error:
        raise CommandError(f"cannot read {args.signer_key}: {error}") from error
    except NoteError as error:
        raise CommandError(f"{args.signer_key}: {error}") from error
    if not isinstance(signer, CosignatureSigner):
        raise CommandError(
            f"{args.signer_key} is not a witness key (cosignature/v1, type 0x04)",
            hint="create one with: porchlight audit keygen --name NAME -o FILE",
        )
    server = args.server.rstrip("/")
    state_path = args.state or _default_state_path(args.key)
    token = _optional_token(args)
    _check_server(args, token)
    source = _http_source(server, token)
    try:
        result = _run_verify(source, args.key, state_path, None, origin=args.origin)
    finally:
        source.close()
    with _log_client() as client:
        signature = cosign(result.checkpoint_text, signer)
        line = signature.line().rstrip("\n")
        body = {"checkpoint": result.checkpoint_text, "cosignature": line}
        try:
            response = client.post(f"{server}/log/cosignatures", json=body)
        except httpx.HTTPError as error:
            raise CommandError(f"cannot submit the cosignature: {error}") from error
    if not response.is_success:
        raise CommandError(
            f"server refused the cosignature: HTTP {response.status_code}: {_detail(response)}"
        )
    print(_summary(result))
    print(line)
    return 0


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(data, dict):
        for key in ("message", "detail"):
            if key in data:
                return str(data[key])
    return json.dumps(data)[:300]


def _token(args: argparse.Namespace) -> str:
    token: str | None = args.token or os.environ.get("PORCHLIGHT_TOKEN")
    if not token:
        raise CommandError(
            "this command needs an API token", hint="pass --token or set PORCHLIGHT_TOKEN"
        )
    return token


def _get_entries(
    client: httpx.Client, server: str, token: str, params: dict[str, str | int]
) -> list[dict[str, Any]]:
    url = f"{server.rstrip('/')}/api/log/entries"
    try:
        response = client.get(url, params=params, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as error:
        raise CommandError(f"cannot reach {url}: {error}") from error
    if response.status_code in (401, 403):
        raise CommandError(
            f"the server refused the token (HTTP {response.status_code})",
            hint="check --token / PORCHLIGHT_TOKEN: reading the log needs the auditor role",
        )
    if not response.is_success:
        raise CommandError(f"{url}: HTTP {response.status_code}: {_detail(response)}")
    try:
        data = response.json()
    except ValueError as error:
        raise CommandError(f"{url} did not return JSON") from error
    entries = data.get("entries") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CommandError(f"{url} returned something other than a list of entries")
    for entry in entries:
        missing = [k for k in ("index", "time", "actor", "action", "subject") if k not in entry]
        if missing:
            raise CommandError(f"{url} returned an entry without {', '.join(missing)}")
    return entries


def _details_text(details: Any) -> str:
    if isinstance(details, dict):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in details.items())
    return "" if details is None else _scalar(details)


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _timeline(args: argparse.Namespace) -> int:
    token = _token(args)
    _check_server(args, token)
    with httpx.Client(timeout=_TIMEOUT) as client:
        entries = _get_entries(
            client, args.server, token, {"subject": f"request:{args.request_id}"}
        )
    if not entries:
        raise CommandError(f"no log entries about request {args.request_id}")
    print(f"request {args.request_id}: {len(entries)} log entries")
    for entry in sorted(entries, key=lambda e: int(e["index"])):
        details = _details_text(entry.get("details"))
        line = f"#{entry['index']:<7} {entry['time']}  {entry['actor']}  {entry['action']}"
        print(line + (f"  ({details})" if details else ""))
    return 0


def _pages(client: httpx.Client, server: str, token: str) -> Iterator[list[dict[str, Any]]]:
    start = 0
    while True:
        page = _get_entries(client, server, token, {"start": start, "limit": EXPORT_PAGE_SIZE})
        if page:
            yield page
        if len(page) < EXPORT_PAGE_SIZE:
            return
        last = int(page[-1]["index"])
        if last < start:
            raise CommandError(f"server paged backwards (asked from {start}, got {last})")
        start = last + 1


_CSV_FIELDS = ("index", "time", "actor", "action", "subject", "details")


def _export(args: argparse.Namespace) -> int:
    token = _token(args)
    _check_server(args, token)
    target = args.output
    buffer = io.StringIO()
    out: TextIO = buffer if target is not None else sys.stdout
    writer = csv.writer(out, lineterminator="\n") if args.format == "csv" else None
    if writer is not None:
        writer.writerow(_CSV_FIELDS)
    count = 0
    with httpx.Client(timeout=_TIMEOUT) as client:
        for page in _pages(client, args.server, token):
            for entry in page:
                if writer is not None:
                    row = [entry.get(k) for k in _CSV_FIELDS[:-1]]
                    writer.writerow([*row, json.dumps(entry.get("details"), sort_keys=True)])
                else:
                    out.write(json.dumps(entry, sort_keys=True) + "\n")
                count += 1
            print(f"\rporchlight: exported {count} entries", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if target is not None:
        # Written only once every page arrived, atomically and durably: a failed export
        # leaves no partial file. 0600: the entries say who was asked and who declined.
        try:
            write_atomically(target, buffer.getvalue().encode(), mode=0o600)
        except OSError as error:
            raise CommandError(f"cannot write {target}: {error}") from error
        print(f"wrote {count} entries to {target}")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    algorithm = ALG_COSIGNATURE_V1 if args.type == "witness" else ALG_ED25519
    try:
        signer = generate_signer(args.name, algorithm)
    except NoteError as error:
        raise CommandError(f"bad key name {args.name!r}: {error}") from error
    try:
        # O_EXCL: never overwrite an existing key; 0600: the signer key is a secret.
        descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as error:
        raise CommandError(f"{args.output} already exists; not overwriting a key") from error
    except OSError as error:
        raise CommandError(f"cannot create {args.output}: {error}") from error
    with os.fdopen(descriptor, "w") as file:
        file.write(signer.skey() + "\n")
    print(signer.verifier().vkey())
    return 0
