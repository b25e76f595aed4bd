"""One agent per data directory: a second `run` stops at once, before its crash recovery could
delete the first agent's clip in progress."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.agent_lock import AgentLock, AgentRunning, running_agent
from device.clipstore import ClipStore
from device.keys import load_device_key
from tests.device.conftest import DeviceDir
from tests.testdata import require_testdata

REPO = Path(__file__).resolve().parents[2]
PORCHLIGHT = str(Path(sys.executable).parent / "porchlight")


def agent(data_dir: Path, video: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PORCHLIGHT, "device", "run", "--data-dir", str(data_dir), "--source", str(video), *extra],
        env=os.environ | {"PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_second_agent_leaves_the_running_ones_clip_alone(device_dir: DeviceDir) -> None:
    video = require_testdata("video", "vtest.avi")  # people walking from the first second
    clips_dir = device_dir.path / "clips"
    first = agent(device_dir.path, video)  # in real time: still recording when B starts
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None:
            if clips_dir.is_dir() and list(clips_dir.glob("*.age.partial")):
                break
            time.sleep(0.05)
        (partial,) = clips_dir.glob("*.age.partial")
        second = agent(device_dir.path, video, "--fast")
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1, err
        assert f"another camera agent (pid {first.pid}) is running on {device_dir.path}" in err
        assert "systemctl stop porchlight-device" in err
        assert "Traceback" not in err and "crash recovery" not in err
        assert partial.exists(), "the second agent must not touch the first one's clip"
        assert running_agent(device_dir.path) == first.pid
    finally:
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=60)
    assert first.returncode == 0, first_err
    # The first agent sealed its clip: both files under final names, and it verifies.
    store = ClipStore(
        device_dir.path, device_public_key=load_device_key(device_dir.path).public_key()
    )
    (clip,) = store.clips()
    store.verify(clip.id)
    assert {p.name for p in clips_dir.iterdir() if p.is_file()} == {
        f"{clip.id}.age",
        f"{clip.id}.json",
    }
    store.close()
    assert running_agent(device_dir.path) is None


def test_lock_names_its_holder_and_is_free_again_after_release(device_dir: DeviceDir) -> None:
    held = AgentLock(device_dir.path)
    held.acquire()
    try:
        with pytest.raises(AgentRunning, match=f"pid {os.getpid()}"):
            AgentLock(device_dir.path).acquire(attempts=2, interval=0.01)
        assert running_agent(device_dir.path) == os.getpid()
    finally:
        held.release()
    assert running_agent(device_dir.path) is None
    again = AgentLock(device_dir.path)
    again.acquire(attempts=1)
    again.release()
