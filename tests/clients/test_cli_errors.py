"""The requester and device command lines fail with one clear line, never a traceback, and send
nothing, for every user mistake that can be caught before or without the server's help."""

from __future__ import annotations

import fcntl
import json
import socket
from pathlib import Path

import pytest

from device.config import config_template
from device.keys import create_device_key
from porchlight.age import generate_identity
from porchlight.cli import main


def closed_port_url() -> str:
    """A loopback URL where nothing listens (the port was just free)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def enrolled_device_dir(path: Path, server: str) -> Path:
    """A set-up camera agent data directory at path, enrolled (as device 7) with server."""
    path.mkdir()
    create_device_key(path)
    identity = generate_identity("x25519")
    (path / "config.toml").write_text(config_template("0", [str(identity.recipient())], None))
    (path / "enrolment.json").write_text(
        json.dumps({"server": server, "device_id": 7, "credential": "c" * 43})
    )
    return path


@pytest.fixture
def device_dir(tmp_path: Path) -> Path:
    """A set-up camera agent data directory, enrolled with a server that is not running."""
    return enrolled_device_dir(tmp_path / "device", closed_port_url())


WARRANT = [
    "--court",
    "Testshire Crown Court",
    "--docket",
    "TC-2026-0042",
    "--judge",
    "HHJ Example",
    "--issued",
    "2026-11-01",
    "--expires",
    "2026-12-01",
    "--offence",
    "burglary",
    "--from",
    "2026-11-20T10:00Z",
    "--to",
    "2026-11-20T12:00Z",
    "--lat",
    "51.5",
    "--lon",
    "-0.12",
    "--radius",
    "200",
]


def test_request_without_server_or_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PORCHLIGHT_SERVER", raising=False)
    monkeypatch.delenv("PORCHLIGHT_TOKEN", raising=False)
    code, _, err = run(["request", "status"], capsys)
    assert code == 1
    assert "porchlight: error: no server given" in err and "PORCHLIGHT_SERVER" in err
    code, _, err = run(["request", "status", "--server", "http://127.0.0.1:1"], capsys)
    assert code == 1
    assert "porchlight: error: no API token given" in err and "PORCHLIGHT_TOKEN" in err
    code, _, err = run(["request", "status", "--server", "ftp://x", "--token", "t"], capsys)
    assert code == 1 and "not an http(s) URL" in err
    assert "Traceback" not in err


def test_request_unreachable_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = closed_port_url()
    monkeypatch.setenv("PORCHLIGHT_TOKEN", "some-token")
    for argv in (
        ["request", "status", "--server", url],
        ["request", "close", "3", "--server", url],
        ["request", "download", "3", "--server", url],
    ):
        code, out, err = run(argv, capsys)
        assert code == 1, argv
        assert f"porchlight: error: cannot reach the server at {url}" in err
        assert "check the URL" in err
        assert out == ""


def test_submit_checks_its_input_before_sending(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = ["request", "submit", "--server", closed_port_url(), "--token", "t"]
    # The warrant document is hashed locally; a missing one stops before any network call.
    code, _, err = run([*base, *WARRANT, "--warrant-file", str(tmp_path / "nope.pdf")], capsys)
    assert code == 1
    assert "cannot read the warrant document" in err
    assert "cannot reach" not in err
    warrant = tmp_path / "warrant.pdf"
    warrant.write_bytes(b"%PDF-1.7 a warrant")
    bad_date = [a if a != "2026-12-01" else "1 Dec 2026" for a in WARRANT]
    with pytest.raises(SystemExit) as exit_:
        main([*base, *bad_date, "--warrant-file", str(warrant)])
    assert exit_.value.code == 2
    assert "is not a date YYYY-MM-DD" in capsys.readouterr().err
    bad_time = [a if a != "2026-11-20T12:00Z" else "noon" for a in WARRANT]
    with pytest.raises(SystemExit):
        main([*base, *bad_time, "--warrant-file", str(warrant)])
    assert "is not a time like" in capsys.readouterr().err


def test_device_commands_need_enrolment(
    capsys: pytest.CaptureFixture[str], device_dir: Path
) -> None:
    (device_dir / "enrolment.json").unlink()
    for argv in (["asks"], ["decline", "4"], ["consent", "4", "--clips", "x"]):
        code, _, err = run(["device", *argv, "--data-dir", str(device_dir)], capsys)
        assert code == 1, argv
        assert "is not enrolled with a server" in err
        assert "porchlight device enroll" in err


def test_device_unreachable_server_retries_then_fails(
    capsys: pytest.CaptureFixture[str], device_dir: Path
) -> None:
    code, _, err = run(["device", "asks", "--data-dir", str(device_dir), "--retries", "1"], capsys)
    assert code == 1
    assert "retrying in 0.5 s" in err
    assert "porchlight: error: cannot reach http://127.0.0.1:" in err
    code, _, err = run(
        ["device", "decline", "9", "--data-dir", str(device_dir), "--retries", "0"], capsys
    )
    assert code == 1 and "cannot reach" in err and "retrying" not in err


def test_consent_needs_clips_and_existing_ones(
    capsys: pytest.CaptureFixture[str], device_dir: Path
) -> None:
    code, _, err = run(["device", "consent", "4", "--data-dir", str(device_dir)], capsys)
    assert code == 1
    assert "choose the clips to share with --clips" in err
    # Nothing was left behind for a consent that never started.
    assert not list((device_dir / "clips").glob("outbox/*/"))


def test_decline_refused_while_a_consent_is_uploading(
    capsys: pytest.CaptureFixture[str], device_dir: Path
) -> None:
    outbox = device_dir / "clips" / "outbox" / "12"
    outbox.mkdir(parents=True)
    (outbox / "state.json").write_text("{}")  # the saved choice of a consent under way
    code, _, err = run(
        ["device", "decline", "12", "--data-dir", str(device_dir), "--retries", "0"], capsys
    )
    assert code == 1
    assert "already has a consent being uploaded" in err
    assert "cannot reach" not in err  # refused locally, before any call


def test_a_damaged_enrolment_file_is_named(
    capsys: pytest.CaptureFixture[str], device_dir: Path
) -> None:
    (device_dir / "enrolment.json").write_text('{"server": "http://x"}')
    code, _, err = run(["device", "asks", "--data-dir", str(device_dir)], capsys)
    assert code == 1
    assert "enrolment.json is damaged" in err and "enrol the device again" in err
    with pytest.raises(SystemExit):
        main(["device", "asks", "--data-dir", str(device_dir), "--retries", "-1"])
    assert "is not a number of retries" in capsys.readouterr().err


def test_one_consent_at_a_time(capsys: pytest.CaptureFixture[str], device_dir: Path) -> None:
    outbox = device_dir / "clips" / "outbox"
    outbox.mkdir(parents=True)
    with (outbox / ".lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # another run, in the middle of its upload
        code, _, err = run(
            ["device", "consent", "4", "--clips", "x", "--data-dir", str(device_dir)], capsys
        )
    assert code == 1
    assert "another 'porchlight device consent' is running" in err
    assert "cannot reach" not in err
