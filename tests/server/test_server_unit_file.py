"""The server's systemd unit: its sandbox, and the guide's matching file permissions."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "porchlight-server.service"


def _service() -> configparser.SectionProxy:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    return unit["Service"]


def test_the_unit_sandboxes_the_server() -> None:
    service = _service()
    assert service["UMask"] == "0077"
    for directive in (
        "ProtectClock",
        "ProtectHostname",
        "ProtectKernelLogs",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "RestrictRealtime",
        "NoNewPrivileges",
    ):
        assert service[directive] == "true", directive
    assert service["ProtectProc"] == "invisible"
    assert service["CapabilityBoundingSet"] == ""  # empty: no capability at all
    assert service["SystemCallFilter"] == "@system-service"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/porchlight"


def test_the_guide_keeps_the_settings_out_of_the_services_reach() -> None:
    guide = (REPO / "deploy" / "self-hosting.md").read_text()
    assert "install -d -o root -g porchlight -m 0750 /etc/porchlight" in guide
    assert "install -o root -g porchlight -m 0640 /dev/null /etc/porchlight/server.env" in guide
    assert "env $(" not in guide  # secrets off command lines
    env_file = guide[guide.index("PORCHLIGHT_DATA_DIR=") :]
    env_file = env_file[: env_file.index("```")]
    for line in env_file.splitlines():
        # systemd's EnvironmentFile= keeps a trailing comment as part of the value.
        assert line.startswith("#") or "#" not in line, line


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify needs the program to exist; everything else is checked as written.
    text = UNIT.read_text().replace("/opt/porchlight/.venv/bin/porchlight", "/bin/true")
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr and "Failed" not in result.stderr, result.stderr
