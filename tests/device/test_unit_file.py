"""The systemd unit's hardening that keeps the agent's plaintext (frames, MP4 bytes in memory)
off the SD card, and the guide's matching advice."""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_unit_file_keeps_plaintext_off_the_card() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "deploy" / "porchlight-device.service")
    service = unit["Service"]
    assert service["LimitCORE"] == "0"  # no core dumps of frames
    assert service["MemorySwapMax"] == "0"  # no swapped-out frames on the SD card
    assert service["PrivateTmp"] == "true"
    assert service["MemoryMax"]
    guide = (REPO / "deploy" / "pi-install.md").read_text()
    assert "## Swap" in guide and "dphys-swapfile" in guide and "memory.swap.max" in guide
