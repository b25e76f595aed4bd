"""`porchlight device ...`: set up and run the camera agent, list and export clips.

Subcommands live here; the sync commands (`enroll`, `asks`, `consent`, `decline`) are added by
`device/sync_cli.py` when it exists: it exposes ``register(commands)`` taking this group's
subparsers action, and may use `data_dir_of`, `load_device_config` and `add_data_dir` below.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from device.clipstore import ClipStore, ClipStoreError
from device.config import (
    CONFIG_NAME,
    ConfigError,
    DeviceConfig,
    config_template,
    default_data_dir,
    load_config,
)
from device.keys import KeyFileError, create_device_key, load_device_key, parse_recipients
from porchlight.age import (
    AgeError,
    PassphraseRequiredError,
    generate_identity,
    read_identity_file,
    write_identity_file,
)
from porchlight.cli import CommandError

IDENTITY_NAME = "homeowner-identity.age"


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the agent's data directory (default: $PORCHLIGHT_DEVICE_DIR or "
        "~/.local/share/porchlight-device)",
    )


def data_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


def load_device_config(args: argparse.Namespace) -> tuple[Path, DeviceConfig]:
    data_dir = data_dir_of(args)
    if not (data_dir / CONFIG_NAME).exists():
        raise CommandError(
            f"no camera agent set up in {data_dir}",
            hint="run 'porchlight device init' first, or pass --data-dir",
        )
    try:
        return data_dir, load_config(data_dir)
    except ConfigError as error:
        raise CommandError(str(error), hint=f"edit {data_dir / CONFIG_NAME}") from None


def _store(data_dir: Path, config: DeviceConfig, *, signing: bool = False) -> ClipStore:
    try:
        key = load_device_key(data_dir)
        return ClipStore(
            data_dir,
            device_key=key if signing else None,
            device_public_key=key.public_key(),
            recipients=parse_recipients(config.keys.recipients),
        )
    except KeyFileError as error:
        raise CommandError(str(error)) from None


def _read_passphrase(path: Path | None, *, confirm: bool = False) -> str:
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise CommandError(f"cannot read passphrase file: {error}") from None
        passphrase = text.rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise CommandError(
                "a passphrase is needed and there is no terminal to ask it on",
                hint="pass --passphrase-file FILE",
            )
        passphrase = getpass.getpass("Homeowner passphrase: ")
        if confirm and getpass.getpass("Again: ") != passphrase:
            raise CommandError("the passphrases differ")
    if not passphrase:
        raise CommandError("the passphrase is empty")
    return passphrase


def cmd_init(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    if (data_dir / CONFIG_NAME).exists():
        raise CommandError(
            f"{data_dir} is already set up", hint="edit its config.toml, or use another --data-dir"
        )
    recipients: list[str] = list(args.recipient or [])
    if recipients:
        try:
            parse_recipients(recipients)
        except KeyFileError as error:
            raise CommandError(str(error)) from None
    passphrase = None if recipients else _read_passphrase(args.passphrase_file, confirm=True)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity_file = None
    if not recipients:
        identity = generate_identity("x25519" if args.classic else "pq")
        write_identity_file(data_dir / IDENTITY_NAME, identity, passphrase)
        recipients = [str(identity.recipient())]
        identity_file = IDENTITY_NAME
        print(
            f"generated the homeowner identity, passphrase-protected: {data_dir / IDENTITY_NAME}",
            file=sys.stderr,
        )
    if not (data_dir / "device-signing-key.pem").exists():
        create_device_key(data_dir)
    (data_dir / CONFIG_NAME).write_text(config_template(args.source, recipients, identity_file))
    print(f"wrote {data_dir / CONFIG_NAME}; clips will be encrypted to:", file=sys.stderr)
    for recipient in recipients:
        print(recipient)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from device.agent import Agent
    from device.sources import FileSource, SourceError, open_source

    data_dir, config = load_device_config(args)
    logging.basicConfig(level=logging.INFO, format="porchlight-device: %(message)s")
    if args.fast and not args.source:
        raise CommandError("--fast needs --source FILE", hint="live cameras run in real time")
    try:
        if args.source:
            source: Any = FileSource(args.source, fast=args.fast)
        else:
            cam = config.camera
            source = open_source(cam.source, cam.width, cam.height, cam.fps)
    except SourceError as error:
        raise CommandError(str(error)) from None
    try:
        agent = Agent(config, data_dir, source, progress=lambda line: print(line, file=sys.stderr))
    except KeyFileError as error:
        raise CommandError(str(error)) from None

    def stop(signum: int, _frame: object) -> None:
        agent.stop.set()
        source.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    summary = agent.run()
    assert summary.recovery is not None
    print(
        f"processed {summary.frames} frames in {summary.seconds:.1f} s ({summary.fps:.1f} fps); "
        f"{summary.clips} new clips; retention deleted {summary.deleted}; "
        f"recovery: {summary.recovery.summary()}",
        file=sys.stderr,
    )
    return 0


def cmd_clips(args: argparse.Namespace) -> int:
    data_dir, config = load_device_config(args)
    store = _store(data_dir, config)
    try:
        clips = store.clips()
    finally:
        store.close()
    if args.json:
        print(json.dumps([c.as_json() for c in clips], indent=1))
        return 0
    if not clips:
        print("no clips", file=sys.stderr)
    for clip in clips:
        score = "-" if clip.motion_score is None else f"{clip.motion_score:.3f}"
        pin = "  pinned" if clip.pinned else ""
        print(
            f"{clip.id}  {clip.start:%Y-%m-%d %H:%M:%S}  {clip.duration:6.1f} s  "
            f"{clip.size / 1e6:7.2f} MB  score {score}{pin}"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    data_dir, config = load_device_config(args)
    output: Path = args.output
    if output.exists() and not args.force:
        raise CommandError(f"{output} exists", hint="choose another -o, or pass --force")
    identity_path: Path | None = args.identity
    if identity_path is None and config.keys.identity_file:
        identity_path = data_dir / config.keys.identity_file
    if identity_path is None:
        raise CommandError("this device holds no homeowner identity", hint="pass --identity FILE")
    store = _store(data_dir, config)
    try:
        store.get(args.clip)
        store.verify(args.clip)
        try:
            try:
                identities = read_identity_file(identity_path, None)
            except PassphraseRequiredError:
                identities = read_identity_file(
                    identity_path, _read_passphrase(args.passphrase_file)
                )
        except OSError as error:
            raise CommandError(f"cannot read identity: {error}") from None
        except AgeError as error:
            raise CommandError(
                f"cannot open the homeowner identity: {error}", hint="check the passphrase"
            ) from None
        partial = output.with_name(output.name + ".partial")
        try:
            with partial.open("wb") as out:
                manifest = store.decrypt(args.clip, identities, out)
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
    except ClipStoreError as error:
        raise CommandError(str(error)) from None
    finally:
        store.close()
    print(
        f"wrote {output} ({manifest.start} to {manifest.end}); signature and hashes verified",
        file=sys.stderr,
    )
    return 0


def cmd_mask_preview(args: argparse.Namespace) -> int:
    import cv2

    from device.masks import draw_preview
    from device.sources import FileSource, SourceError, open_source

    _, config = load_device_config(args)
    try:
        if args.source:
            source: Any = FileSource(args.source, fast=True)
        else:
            cam = config.camera
            source = open_source(cam.source, cam.width, cam.height, cam.fps, fast=True)
        frame = next(iter(source.frames()), None)
    except SourceError as error:
        raise CommandError(str(error)) from None
    finally:
        if "source" in locals():
            source.stop()
    if frame is None:
        raise CommandError("the camera gave no frame")
    preview = draw_preview(frame.image, config.privacy_masks, config.motion.zones)
    if not cv2.imwrite(str(args.output), preview):
        raise CommandError(f"cannot write {args.output}", hint="use a .png or .jpg name")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from device.retention import filesystem_usage

    data_dir, config = load_device_config(args)
    store = _store(data_dir, config)
    try:
        clips = store.clips()
        total = store.total_size()
    finally:
        store.close()
    usage = filesystem_usage(data_dir)
    status_path = data_dir / "status.json"
    last: dict[str, Any] = json.loads(status_path.read_text()) if status_path.exists() else {}
    print(f"data directory   {data_dir}")
    print(f"camera source    {config.camera.source}")
    print(
        f"recipients       {len(config.keys.recipients)} "
        + (
            "(homeowner identity on this device, passphrase-protected)"
            if config.keys.identity_file
            else "(no identity on this device)"
        )
    )
    print(
        f"privacy masks    {len(config.privacy_masks)}; "
        f"motion zones {len(config.motion.zones) or 'whole frame'}"
    )
    print(
        f"clips            {len(clips)}, {total / 1e6:.1f} MB, "
        f"{sum(c.pinned for c in clips)} pinned"
    )
    if clips:
        print(
            f"oldest, newest   {clips[0].start:%Y-%m-%d %H:%M}, "
            f"{clips[-1].start:%Y-%m-%d %H:%M} UTC"
        )
    print(
        f"disk free        {usage.free / usage.total:.0%} (keeping at least "
        f"{config.retention.min_free_fraction:.0%}; "
        f"clips kept {config.retention.max_age_days:g} days)"
    )
    if last:
        print(f"last start       {last.get('started')} (pid {last.get('pid')})")
        print(f"last recovery    {last.get('recovery')}")
    print(f"checked at       {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    return 0


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("device", help="the camera agent on the Raspberry Pi")
    commands = group.add_subparsers(dest="device_command", metavar="COMMAND")
    group.set_defaults(handler=lambda _args: group.print_help() or 2)

    init = commands.add_parser("init", help="write a config, create the device key and keys")
    add_data_dir(init)
    init.add_argument(
        "--recipient",
        action="append",
        help="encrypt clips to this age recipient "
        "(repeatable); without it a homeowner identity is generated here",
    )
    init.add_argument(
        "--source", default="0", help="camera: USB index, file, rtsp:// URL or picamera2"
    )
    init.add_argument("--passphrase-file", type=Path, help="passphrase for the generated identity")
    init.add_argument(
        "--classic", action="store_true", help="X25519 identity instead of post-quantum"
    )
    init.set_defaults(handler=cmd_init)

    run = commands.add_parser("run", help="watch the camera and record motion clips")
    add_data_dir(run)
    run.add_argument("--source", help="read this video file instead of the configured camera")
    run.add_argument(
        "--fast", action="store_true", help="with --source: as fast as possible, exit at its end"
    )
    run.set_defaults(handler=cmd_run)

    clips = commands.add_parser("clips", help="list recorded clips")
    add_data_dir(clips)
    clips.add_argument("--json", action="store_true", help="machine-readable output")
    clips.set_defaults(handler=cmd_clips)

    export = commands.add_parser("export", help="verify and decrypt a clip to an MP4 file")
    add_data_dir(export)
    export.add_argument("clip", help="clip id (see 'porchlight device clips')")
    export.add_argument("-o", "--output", type=Path, required=True)
    export.add_argument("--passphrase-file", type=Path, help="read the passphrase from this file")
    export.add_argument(
        "--identity", type=Path, help="homeowner identity file (default: the configured one)"
    )
    export.add_argument("--force", action="store_true", help="overwrite the output file")
    export.set_defaults(handler=cmd_export)

    preview = commands.add_parser("mask-preview", help="save a snapshot with masks and zones drawn")
    add_data_dir(preview)
    preview.add_argument("-o", "--output", type=Path, required=True)
    preview.add_argument("--source", help="take the frame from this video file")
    preview.set_defaults(handler=cmd_mask_preview)

    status = commands.add_parser("status", help="what the agent holds and how full the disk is")
    add_data_dir(status)
    status.set_defaults(handler=cmd_status)

    # The sync commands (enroll, asks, consent, decline) live in their own module when present.
    if importlib.util.find_spec("device.sync_cli") is not None:
        importlib.import_module("device.sync_cli").register(commands)
