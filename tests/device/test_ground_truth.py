"""Issue 5, point 1: recorded clips cover every moving and present interval of the ground
truth in video/SOURCES.md, and an empty stretch longer than pre-roll + post-roll is not
recorded. Long empty stretches are made by replaying empty seconds through the file source."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from device.agent import Agent
from device.clipstore import ClipStore
from device.keys import load_device_key
from device.sources import FileSource
from tests.device.conftest import DeviceDir
from tests.testdata import require_testdata

WALL = datetime(2026, 1, 1, tzinfo=UTC)
PRE, POST = 5.0, 10.0

# (file, segments to play, moving, present) from SOURCES.md; the end of a clip is inf.
PERSON = (
    "one-by-one-person-detection.mp4",
    # 0-6 s is empty: play it 5 times (30 s) before the clip; 46-50 s is empty: 7 more times.
    [(0.0, 6.0)] * 4 + [(0.0, 50.0)] + [(46.0, 50.0)] * 7 + [(50.0, float("inf"))],
    [
        (6, 9),
        (17, 21),
        (22, 26),
        (43, 46),
        (50, 53),
        (59, 61),
        (63, 64),
        (65, 71),
        (74, 77),
        (84, 88),
        (92, 95),
        (117, 121),
        (123, 127),
        (133, 137),
    ],
    [(6, 20), (22, 45), (50, 70), (74, 87), (92, 121), (123, 136)],
)
CARS = (
    "car-detection.mp4",
    # 9-14 s and 20-25 s are empty: stretch each to about 25 s. The ground truth is in whole
    # seconds and the next car enters during second 13 (24), so only 9-13 (20-24) is replayed.
    [(0.0, 13.0)]
    + [(9.0, 13.0)] * 5
    + [(13.0, 24.0)]
    + [(20.0, 24.0)] * 5
    + [(24.0, float("inf"))],
    [(4, 9), (14, 20), (25, 28)],
    [(4, 9), (14, 20), (25, 29)],
)


def timeline(
    segments: list[tuple[float, float]], duration: float, fps: float
) -> list[tuple[float, float, float]]:
    """(source start, source end, output offset) for each played segment."""
    out, offset = [], 0.0
    for start, end in segments:
        end = min(end, duration)
        out.append((start, end, offset))
        offset += end - start
    return out


def to_output(
    interval: tuple[float, float], plan: list[tuple[float, float, float]]
) -> list[tuple[float, float]]:
    """Every place the source interval is played in the output timeline."""
    a, b = interval
    found = []
    for start, end, offset in plan:
        lo, hi = max(a, start), min(b, end)
        if lo < hi:
            found.append((offset + lo - start, offset + hi - start))
    return found


def empty_stretches(
    plan: list[tuple[float, float, float]], present: list[tuple[int, int]], total: float
) -> list[tuple[float, float]]:
    busy = sorted(x for p in present for x in to_output(p, plan))
    gaps, cursor = [], 0.0
    for a, b in busy:
        if a > cursor:
            gaps.append((cursor, a))
        cursor = max(cursor, b)
    if total > cursor:
        gaps.append((cursor, total))
    return gaps


@pytest.mark.parametrize("case", [PERSON, CARS], ids=["person", "cars"])
def test_clips_cover_events_and_skip_long_empty_stretches(
    case: tuple, device_dir: DeviceDir
) -> None:
    name, segments, moving, present = case
    path: Path = require_testdata("video", name)
    source = FileSource(path, fast=True, segments=segments)
    assert source.duration is not None
    plan = timeline(segments, source.duration, source.fps)
    total = plan[-1][2] + plan[-1][1] - plan[-1][0]
    summary = Agent(device_dir.config, device_dir.path, source, wall_start=WALL).run()
    assert summary.frames > 0

    store = ClipStore(
        device_dir.path, device_public_key=load_device_key(device_dir.path).public_key()
    )
    spans = [
        ((c.start - WALL).total_seconds(), (c.end - WALL).total_seconds()) for c in store.clips()
    ]
    store.close()
    print(f"\n{name}: {total:.1f} s played, clips:")
    for a, b in spans:
        print(f"  clip {a:7.1f} - {b:7.1f}")

    def covered(a: float, b: float) -> bool:
        # Ground truth is in whole seconds; a clip may end with the video.
        return any(ca <= a + 0.05 and cb >= min(b, total) - 0.15 for ca, cb in spans)

    problems = []
    for kind, intervals in (("moving", moving), ("present", present)):
        for interval in intervals:
            for a, b in to_output(interval, plan):
                ok = covered(a, b)
                print(f"  {kind:8} {a:7.1f} - {b:7.1f}  {'in a clip' if ok else 'NOT RECORDED'}")
                if not ok:
                    problems.append(f"{kind} {a:.1f}-{b:.1f} not inside one clip")
    long_empty = [
        (a, b) for a, b in empty_stretches(plan, present + moving, total) if b - a > PRE + POST + 2
    ]
    assert long_empty, "the test must contain a long empty stretch"
    for a, b in long_empty:
        # Post-roll may run into its start, pre-roll (rounded down to a keyframe) into its end.
        quiet = (a + POST + 1.0, b - PRE - 1.0)
        hit = [s for s in spans if s[0] < quiet[1] and s[1] > quiet[0]]
        print(
            f"  empty    {a:7.1f} - {b:7.1f}  {'RECORDED' if hit else 'not recorded'} "
            f"(middle {quiet[0]:.1f}-{quiet[1]:.1f})"
        )
        if hit:
            problems.append(f"empty {a:.1f}-{b:.1f} recorded by {hit}")
    assert not problems, problems
