"""Issue 5, point 4: kill -9 the agent at 20 random moments while it records; after each
restart every listed clip decrypts and its manifest verifies, and no final-name file is
invalid."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from device.clipstore import ClipStore
from device.keys import load_device_key
from tests.device.conftest import DeviceDir
from tests.testdata import require_testdata

REPO = Path(__file__).resolve().parents[2]
PORCHLIGHT = str(Path(sys.executable).parent / "porchlight")


def ready(clips_dir: Path, wait_for_seal: bool, sealed_before: int) -> bool:
    if not clips_dir.is_dir():
        return False
    if wait_for_seal:
        return len(list(clips_dir.glob("*.age"))) > sealed_before
    return any(p.name.endswith(".partial") for p in clips_dir.iterdir())


def test_kill_9_at_random_moments_leaves_only_valid_clips(device_dir: DeviceDir) -> None:
    video = require_testdata("video", "vtest.avi")  # people walking the whole time
    device_dir.write_config(**{"max_clip_seconds = 300.0": "max_clip_seconds = 10.0"})
    rng = random.Random(5)
    public = load_device_key(device_dir.path).public_key()
    recovered = 0
    for round_ in range(20):
        agent = subprocess.Popen(
            [
                PORCHLIGHT,
                "device",
                "run",
                "--data-dir",
                str(device_dir.path),
                "--source",
                str(video),
                "--fast",
            ],
            env=os.environ | {"PYTHONPATH": str(REPO)},
            stderr=subprocess.DEVNULL,
        )
        # Kill "while recording": once a clip is being written, at a random moment after.
        # Every fourth round waits for a clip to be sealed first, so there are always sealed
        # clips to check and some kills land just after a rename, however loaded the machine.
        clips_dir = device_dir.path / "clips"
        sealed_before = len(list(clips_dir.glob("*.age"))) if clips_dir.is_dir() else 0

        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline
            and agent.poll() is None
            and not ready(clips_dir, round_ % 4 == 0, sealed_before)
        ):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5 if round_ % 4 == 0 else 2.5))
        agent.send_signal(signal.SIGKILL)
        agent.wait()

        # The restart's recovery, then what a restarted agent would list.
        store = ClipStore(device_dir.path, device_public_key=public)
        report = store.recover()
        recovered += len(report.partials_removed) + len(report.reindexed)
        listed = {clip.id for clip in store.clips()}
        for clip_id in listed:
            out = io.BytesIO()
            manifest = store.decrypt(clip_id, [device_dir.identity], out)
            assert manifest.clip_id == clip_id
        finals = {p.stem for p in store.clips_dir.iterdir() if p.suffix in (".age", ".json")}
        assert finals == listed, f"round {round_}: files under final names not in the index"
        assert not [p for p in store.clips_dir.iterdir() if p.name.endswith(".partial")]
        store.close()
    store = ClipStore(device_dir.path, device_public_key=public)
    clips = store.clips()
    assert clips, "the agent must have sealed clips between the kills"
    # max_clip_seconds = 10: a clip closes at the first keyframe (every 1 s) after that.
    assert all(clip.duration <= 11.0 for clip in clips), [c.duration for c in clips]
    store.close()
    assert recovered > 0, "at least one kill must have interrupted a clip"
