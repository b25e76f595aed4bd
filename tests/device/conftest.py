from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from device.config import DeviceConfig, config_template, parse_config
from device.keys import create_device_key
from porchlight.age import X25519Identity, generate_identity


class DeviceDir:
    """A real data directory as `porchlight device init --recipient` leaves it."""

    def __init__(self, path: Path, identity: X25519Identity) -> None:
        self.path = path
        self.identity = identity
        self.identity_file = path.parent / "homeowner.txt"
        self.identity_file.write_text(str(identity) + "\n")

    @property
    def config(self) -> DeviceConfig:
        return parse_config((self.path / "config.toml").read_text())

    def write_config(self, extra: str = "", **replace: str) -> None:
        text = config_template("0", [str(self.identity.recipient())], None)
        for old, new in replace.items():
            assert old in text
            text = text.replace(old, new)
        (self.path / "config.toml").write_text(extra + text)


@pytest.fixture
def device_dir(tmp_path: Path) -> DeviceDir:
    identity = generate_identity("x25519")
    assert isinstance(identity, X25519Identity)
    path = tmp_path / "device"
    path.mkdir()
    create_device_key(path)
    made = DeviceDir(path, identity)
    made.write_config()
    return made


@pytest.fixture
def make_device_dir(tmp_path: Path) -> Callable[[str], DeviceDir]:
    def make(name: str) -> DeviceDir:
        identity = generate_identity("x25519")
        assert isinstance(identity, X25519Identity)
        path = tmp_path / name
        path.mkdir()
        create_device_key(path)
        made = DeviceDir(path, identity)
        made.write_config()
        return made

    return make
