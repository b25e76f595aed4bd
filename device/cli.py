"""`porchlight device ...`: set up and run the camera agent, list and export clips, and answer
footage requests (`enroll`, `asks`, `consent`, `decline`, whose code is in device/sync_cli.py).

This module only builds the parsers. What a command needs (the clip store, pydantic for the
config, the HTTP client, the encoder) is imported when that command runs, so `--help` and
the local commands stay quick on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from porchlight.cli import CommandError

if TYPE_CHECKING:
    from device.clipstore import ClipStore
    from device.config import DeviceConfig

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
    from device.config import default_data_dir

    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


def load_device_config(args: argparse.Namespace) -> tuple[Path, DeviceConfig]:
    from device.config import CONFIG_NAME, ConfigError, load_config

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
    from device.clipstore import ClipStore
    from device.keys import KeyFileError, load_device_key, parse_recipients

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


def read_passphrase(path: Path | None, *, confirm: bool = False) -> str:
    import getpass

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


def _write_new_identity(path: Path, identity: Any, passphrase: str | None) -> None:
    """Write the identity file only if none exists: linking a finished file into place fails
    if the name is taken, so even a race with another `init` cannot replace an identity."""
    import os

    from porchlight.age import write_identity_file

    staging = path.with_name(f".{path.name}.{os.getpid()}.new")
    write_identity_file(staging, identity, passphrase)
    try:
        os.link(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def _write_new_file(path: Path, text: str) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _refuse_to_init_over(data_dir: Path) -> None:
    """Refuse to set up a directory that still holds keys or footage of an earlier setup."""
    from device.config import CONFIG_NAME
    from device.keys import signed_footage

    if data_dir.exists() and not data_dir.is_dir():
        raise CommandError(
            f"{data_dir} exists and is not a directory", hint="use another --data-dir"
        )
    if (data_dir / CONFIG_NAME).exists():
        raise CommandError(
            f"{data_dir} is already set up", hint="edit its config.toml, or use another --data-dir"
        )
    restore = (
        f"restore {CONFIG_NAME} from a backup ('porchlight keygen -y FILE' prints an "
        "identity's recipient for its [keys] section), or use another --data-dir"
    )
    if (data_dir / IDENTITY_NAME).exists():
        raise CommandError(
            f"{data_dir} has no {CONFIG_NAME} but holds a homeowner identity ({IDENTITY_NAME}), "
            "perhaps the only key to clips recorded with it; init never replaces it",
            hint=restore,
        )
    footage = signed_footage(data_dir)
    if footage:
        raise CommandError(
            f"{data_dir} has no {CONFIG_NAME} but holds {len(footage)} clip files of an "
            "earlier setup; init will not start a new one over them",
            hint=restore,
        )


def cmd_init(args: argparse.Namespace) -> int:
    import os

    from device.config import CONFIG_NAME, config_template
    from device.keys import (
        DEVICE_KEY_NAME,
        KeyFileError,
        create_device_key,
        load_device_key,
        parse_recipients,
    )
    from porchlight.age import generate_identity

    data_dir = data_dir_of(args)
    recipients: list[str] = list(args.recipient or [])
    if recipients and (args.passphrase_file or args.classic):
        raise CommandError(
            "--passphrase-file and --classic are for an identity generated here; with "
            "--recipient none is generated",
            hint="leave out --recipient to keep the identity on this device, "
            "or leave out the other options",
        )
    _refuse_to_init_over(data_dir)
    if recipients:
        try:
            parse_recipients(recipients)
        except KeyFileError as error:
            raise CommandError(str(error)) from None
    key_path = data_dir / DEVICE_KEY_NAME
    if key_path.exists():
        # Made by an earlier 'enroll' (there are no clips, checked above): keep it, since the
        # server may know this device by it.
        try:
            load_device_key(data_dir)
        except KeyFileError as error:
            raise CommandError(str(error), hint="nothing was changed") from None
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise CommandError(f"cannot create {data_dir}: {error.strerror}") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise CommandError(
            f"{data_dir} is not writable by this user", hint="use another --data-dir"
        )
    passphrase = None if recipients else read_passphrase(args.passphrase_file, confirm=True)
    created: list[Path] = []
    try:
        identity_file = None
        if not recipients:
            identity = generate_identity("x25519" if args.classic else "pq")
            _write_new_identity(data_dir / IDENTITY_NAME, identity, passphrase)
            created.append(data_dir / IDENTITY_NAME)
            recipients = [str(identity.recipient())]
            identity_file = IDENTITY_NAME
        if not key_path.exists():
            create_device_key(data_dir)
            created.append(key_path)
        _write_new_file(
            data_dir / CONFIG_NAME, config_template(args.source, recipients, identity_file)
        )
    except BaseException as error:
        # Nothing was recorded with what this run made: leave the directory as it was.
        for path in created:
            path.unlink(missing_ok=True)
        if isinstance(error, FileExistsError):
            raise CommandError(
                f"{error.filename} appeared while init ran (another init?); nothing was replaced"
            ) from None
        if isinstance(error, OSError):
            raise CommandError(f"cannot set up {data_dir}: {error}") from None
        raise
    if identity_file:
        print(
            f"generated the homeowner identity, passphrase-protected: {data_dir / IDENTITY_NAME}"
            " (without the passphrase no clip can ever be opened: keep it safe)",
            file=sys.stderr,
        )
    print(f"wrote {data_dir / CONFIG_NAME}; clips will be encrypted to:", file=sys.stderr)
    for recipient in recipients:
        print(recipient)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import logging
    import signal

    from device.agent import Agent
    from device.agent_lock import AgentRunning
    from device.keys import KeyFileError
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
    try:
        summary = agent.run()
    except AgentRunning as error:
        raise CommandError(
            error.message,
            hint="two agents on one data directory would delete each other's clips; stop the "
            "other one (sudo systemctl stop porchlight-device) or use another --data-dir",
        ) from None
    assert summary.recovery is not None
    print(
        f"processed {summary.frames} frames in {summary.seconds:.1f} s ({summary.fps:.1f} fps); "
        f"{summary.clips} new clips; retention deleted {summary.deleted}; "
        f"recovery: {summary.recovery.summary()}",
        file=sys.stderr,
    )
    return 0


def cmd_clips(args: argparse.Namespace) -> int:
    import json

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


@contextmanager
def private_output(output: Path, *, replace: bool) -> Iterator[BinaryIO]:
    """A new file, mode 0600, that appears at ``output`` only once complete and fsynced.

    Where the filesystem can (O_TMPFILE: ext4, f2fs, btrfs, xfs, tmpfs) the bytes have no name
    at all until then, so a kill -9 or a power cut mid-write leaves no plaintext file behind.
    Elsewhere they go to ``<output>.partial``, created exclusively and deleted on any error.
    Without ``replace`` an existing ``output`` is never overwritten, even one made meanwhile.
    """
    import errno
    import os

    directory = output.parent
    partial: Path | None = None
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        partial = output.with_name(output.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            if partial is None:
                # Naming an O_TMPFILE file: linkat through /proc with AT_SYMLINK_FOLLOW, which
                # os.link uses only when given a dir fd (ignored for an absolute source).
                named = output.with_name(f".{output.name}.{os.getpid()}.partial")
                link_target = named if replace else output
                dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.link(f"/proc/self/fd/{handle.fileno()}", link_target, src_dir_fd=dir_fd)
                finally:
                    os.close(dir_fd)
                if replace:
                    try:
                        os.replace(named, output)
                    finally:
                        named.unlink(missing_ok=True)
            elif replace:
                os.replace(partial, output)
            else:
                os.link(partial, output)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)


def _check_output(output: Path, force: bool, kind: str) -> None:
    """Refuse, before any work, an output that cannot or must not be written."""
    if output.is_dir():
        raise CommandError(f"{output} is a directory", hint=f"give -o a file name for the {kind}")
    if output.exists() and not force:
        raise CommandError(f"{output} exists", hint="choose another -o, or pass --force")
    if not output.parent.is_dir():
        raise CommandError(
            f"cannot write {output}: the directory {output.parent} does not exist",
            hint="create it first, or choose another -o",
        )


def _output_taken(error: FileExistsError) -> CommandError:
    """The output, or a leftover partial of it, appeared or was there (see private_output)."""
    taken = str(error.filename2 or error.filename)
    if taken.endswith(".partial"):
        return CommandError(
            f"{taken} exists: an interrupted run left it, and it holds unencrypted images",
            hint="delete it and run the command again",
        )
    return CommandError(f"{taken} exists", hint="choose another -o, or pass --force")


def cmd_export(args: argparse.Namespace) -> int:
    from device.clipstore import ClipStoreError
    from porchlight.age import AgeError, PassphraseRequiredError, read_identity_file

    data_dir, config = load_device_config(args)
    output: Path = args.output
    _check_output(output, args.force, "video")
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
                    identity_path, read_passphrase(args.passphrase_file)
                )
        except OSError as error:
            raise CommandError(f"cannot read identity: {error}") from None
        except AgeError as error:
            raise CommandError(
                f"cannot open the homeowner identity: {error}", hint="check the passphrase"
            ) from None
        try:
            with private_output(output, replace=args.force) as out:
                manifest = store.decrypt(args.clip, identities, out)
        except FileExistsError as error:
            raise _output_taken(error) from None
        except OSError as error:
            raise CommandError(f"export to {output} failed: {error.strerror or error}") from None
    except ClipStoreError as error:
        raise CommandError(str(error)) from None
    finally:
        store.close()
    print(
        f"wrote {output} ({manifest.start} to {manifest.end}); signature and hashes verified; "
        "it is NOT encrypted: delete it when done",
        file=sys.stderr,
    )
    return 0


PREVIEW_FORMATS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}


def cmd_mask_preview(args: argparse.Namespace) -> int:
    output: Path = args.output
    image_type = PREVIEW_FORMATS.get(output.suffix.lower())
    if image_type is None:
        raise CommandError(
            f"{output} does not name a PNG or JPEG image", hint="end the name in .png or .jpg"
        )
    _check_output(output, args.force, "snapshot")
    _, config = load_device_config(args)

    import cv2

    from device.masks import draw_preview
    from device.sources import FileSource, SourceError, open_source

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
    encoded, image = cv2.imencode(image_type, preview)
    if not encoded:
        raise CommandError(f"cannot encode the snapshot as {image_type}")
    try:
        with private_output(output, replace=args.force) as out:
            out.write(image.tobytes())
    except FileExistsError as error:
        raise _output_taken(error) from None
    except OSError as error:
        raise CommandError(f"cannot write {output}: {error.strerror or error}") from None
    print(
        f"wrote {output} (mode 0600): it shows what the camera sees; delete it once checked",
        file=sys.stderr,
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import json
    from datetime import UTC, datetime

    from device.agent_lock import running_agent
    from device.retention import filesystem_usage

    data_dir, config = load_device_config(args)
    store = _store(data_dir, config)
    try:
        clips = store.clips()
        total = store.total_size()
        set_aside = store.quarantined()
    finally:
        store.close()
    usage = filesystem_usage(data_dir)
    status_path = data_dir / "status.json"
    last: dict[str, Any] = {}
    damaged = False
    if status_path.exists():
        try:
            loaded = json.loads(status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = None
        damaged = not isinstance(loaded, dict)
        last = loaded if isinstance(loaded, dict) else {}
    agent_pid = running_agent(data_dir)
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
    if set_aside:
        print(
            f"set aside        {len(set_aside)} clips that did not verify, still encrypted, "
            f"in {set_aside[0].parent} ({sum(p.stat().st_size for p in set_aside) / 1e6:.1f} MB)"
        )
    if agent_pid is None:
        print("agent            not running")
    else:
        print(f"agent            running{f' (pid {agent_pid})' if agent_pid else ''}")
    if last:
        print(f"last start       {last.get('started')} (pid {last.get('pid')})")
        print(f"last recovery    {last.get('recovery')}")
    elif damaged:
        print(f"last start       unknown ({status_path} cannot be read)")
    print(f"checked at       {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    return 0


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "device",
        help="the camera agent on the Raspberry Pi",
        description="The camera agent: records motion clips, encrypted at capture to the "
        "homeowner's age recipient (the Pi cannot open them), and answers footage requests "
        "clip by clip. Start with 'init', check the view with 'mask-preview', then 'run' "
        "(or the systemd service). Guide: deploy/pi-install.md.",
    )
    commands = group.add_subparsers(dest="device_command", metavar="COMMAND")
    group.set_defaults(handler=lambda _args: group.print_help() or 2)

    init = commands.add_parser(
        "init",
        help="write a config, create the device key and keys",
        description="Set up a data directory: config.toml, the device's signing key and, "
        "without --recipient, a homeowner identity generated here. init then asks for a "
        "passphrase (twice) and stores the identity encrypted with it: the passphrase is the "
        "only way to open your clips, and if it is lost every clip is unreadable for good. "
        "init never replaces an existing identity, key or clips.",
    )
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
    init.add_argument(
        "--passphrase-file",
        type=Path,
        help="read the generated identity's passphrase from this file instead of asking "
        "(not with --recipient)",
    )
    init.add_argument(
        "--classic",
        action="store_true",
        help="generate an X25519 identity instead of a post-quantum one (not with --recipient)",
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

    export = commands.add_parser(
        "export",
        help="verify and decrypt a clip to an MP4 file (unencrypted)",
        description="Verify a clip's signed manifest and hashes, decrypt it with the homeowner "
        "identity and write the MP4. The output is NOT encrypted: anyone who can read it sees "
        "the video. It is created readable by you only (0600); prefer a machine you control "
        "to the Pi's SD card, and delete it when done.",
    )
    add_data_dir(export)
    export.add_argument("clip", help="clip id (see 'porchlight device clips')")
    export.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="FILE",
        help="where to write the decrypted, unencrypted MP4 (mode 0600)",
    )
    export.add_argument("--passphrase-file", type=Path, help="read the passphrase from this file")
    export.add_argument(
        "--identity", type=Path, help="homeowner identity file (default: the configured one)"
    )
    export.add_argument("--force", action="store_true", help="overwrite the output file")
    export.set_defaults(handler=cmd_export)

    preview = commands.add_parser(
        "mask-preview",
        help="save a snapshot with masks and zones drawn",
        description="Take one frame from the camera, black out the privacy masks, draw the "
        "masks and motion zones, and save it as an unencrypted PNG or JPEG (mode 0600). It "
        "shows what the camera sees: write it to RAM (/dev/shm) rather than the SD card, copy "
        "it off, and delete it.",
    )
    add_data_dir(preview)
    preview.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="FILE",
        help="where to write the snapshot; the name must end in .png or .jpg",
    )
    preview.add_argument("--source", help="take the frame from this video file")
    preview.add_argument("--force", action="store_true", help="overwrite the output file")
    preview.set_defaults(handler=cmd_mask_preview)

    status = commands.add_parser("status", help="what the agent holds and how full the disk is")
    add_data_dir(status)
    status.set_defaults(handler=cmd_status)

    enroll = commands.add_parser("enroll", help="register this device with a community server")
    enroll.add_argument(
        "--server", required=True, help="server URL, e.g. https://porchlight.example"
    )
    enroll.add_argument("--code", required=True, help="the one-time enrolment code")
    add_data_dir(enroll)
    enroll.add_argument(
        "--name", default=None, help="how the server lists this camera (default: the host name)"
    )
    _allow_http(enroll, saved=True)
    enroll.set_defaults(handler=_later("device.sync_cli", "cmd_enroll"))

    asks = commands.add_parser("asks", help="footage requests asked of this device, and its clips")
    _sync_options(asks)
    asks.add_argument("--json", action="store_true", help="machine-readable output")
    asks.set_defaults(handler=_later("device.sync_cli", "cmd_asks"))

    consent = commands.add_parser(
        "consent", help="share chosen clips with a request (rewrapped for the agency, uploaded)"
    )
    consent.add_argument("ask", help="the ask id (see 'porchlight device asks')")
    consent.add_argument(
        "--clips", help="clip ids to share, comma separated (omit to finish an earlier upload)"
    )
    _sync_options(consent)
    consent.add_argument("--passphrase-file", type=Path, help="read the passphrase from this file")
    consent.add_argument(
        "--identity", type=Path, help="homeowner identity file (default: the configured one)"
    )
    consent.set_defaults(handler=_later("device.sync_cli", "cmd_consent"))

    decline = commands.add_parser("decline", help="decline an ask: nothing is shared")
    decline.add_argument("ask", help="the ask id")
    _sync_options(decline)
    decline.set_defaults(handler=_later("device.sync_cli", "cmd_decline"))


def _later(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A handler that imports its module only when its command runs."""

    def handler(args: argparse.Namespace) -> int:
        command: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), name
        )
        return command(args)

    return handler


def _retries(text: str) -> int:
    if not text.isdigit() or int(text) > 20:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of retries from 0 to 20")
    return int(text)


def _allow_http(parser: argparse.ArgumentParser, *, saved: bool = False) -> None:
    # porchlight.client.ALLOW_HTTP_FLAG, spelt out: that module (httpx) loads only when a
    # command that calls the server runs.
    parser.add_argument(
        "--allow-http",
        action="store_true",
        help="allow a plain http:// server that is not this machine (the device credential "
        "then crosses the network unencrypted: only on a network you trust)"
        + ("; kept in the enrolment for later commands" if saved else ""),
    )


def _sync_options(parser: argparse.ArgumentParser) -> None:
    add_data_dir(parser)
    parser.add_argument(
        "--retries",
        type=_retries,
        default=5,
        help="retries (with doubling waits from 0.5 s) while the server is unreachable",
    )
    _allow_http(parser)
