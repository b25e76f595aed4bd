"""Pixel F1 and speed of Porchlight's motion detector against OpenCV's, on CDnet 2014 highway.

Rules (CDnet 2014, as described in ../shared/testdata/video/SOURCES.md): decoded frame k pairs
with gt{k+1:06d}.png; only frames in temporalROI.txt are scored; 255 is motion, 0 and 50
(shadow) are background, 85 (outside the ROI) and 170 (unknown) are ignored. Every detector
sees every frame from the first one (to learn its background). Speed is frames per second of
the detector alone (decoding excluded), on one pinned core with OpenCV limited to one thread.

    .venv/bin/python bench/motion.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device.motion import MotionDetector, MotionParams
from tests.testdata import testdata_root

Detector = Callable[[np.ndarray], np.ndarray]


def one_core() -> None:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    cv2.setNumThreads(1)


def load(root: Path) -> tuple[list[np.ndarray], list[np.ndarray], int, int]:
    capture = cv2.VideoCapture(str(root / "cdnet2014_highway_input.avi"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    truth: dict[int, np.ndarray] = {}
    first = last = 0
    with tarfile.open(root / "cdnet2014_highway_groundtruth.tar.gz") as archive:
        for member in archive:
            name = member.name.rsplit("/", 1)[-1]
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is None:
                continue
            data = handle.read()
            if name == "temporalROI.txt":
                first, last = (int(x) for x in data.split())
            elif name.startswith("gt") and name.endswith(".png"):
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
                truth[int(name[2:8])] = image
    labels = [truth[k + 1] for k in range(len(frames))]
    return frames, labels, first, last


def score(
    masks: list[np.ndarray], labels: list[np.ndarray], first: int, last: int
) -> tuple[float, float, float]:
    tp = fp = fn = 0
    for k in range(first - 1, min(last, len(masks))):
        truth, found = labels[k], masks[k] > 0
        scored = (truth != 85) & (truth != 170)
        moving = truth == 255
        tp += int(np.count_nonzero(found & moving & scored))
        fp += int(np.count_nonzero(found & ~moving & scored))
        fn += int(np.count_nonzero(~found & moving & scored))
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return 2 * precision * recall / max(precision + recall, 1e-12), precision, recall


def running_average() -> Detector:
    """OpenCV's classic accumulateWeighted background and absolute difference threshold."""
    state: dict[str, np.ndarray] = {}

    def detect(frame: np.ndarray) -> np.ndarray:
        grey = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        if "bg" not in state:
            state["bg"] = grey.astype(np.float32)
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(state["bg"]))
        cv2.accumulateWeighted(grey, state["bg"], 0.05)
        _, mask = cv2.threshold(diff, 25, 255, cv2.THRESH_BINARY)
        return cv2.dilate(mask, None)

    return detect


def opencv_subtractor(subtractor: cv2.BackgroundSubtractor) -> Detector:
    # Shadows come back as 127: CDnet scores shadows as background, so only 255 is motion.
    return lambda frame: cv2.compare(subtractor.apply(frame), 255, cv2.CMP_EQ)


def porchlight() -> Detector:
    # The agent's defaults (device/config.py) at the clip's nominal 60 fps, ghost check included.
    return MotionDetector(MotionParams.for_fps(60.0)).apply


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timing runs per detector (best is kept)"
    )
    args = parser.parse_args()
    root = testdata_root() / "video" / "labeled"
    if not root.exists():
        print(f"bench/motion.py: test data not found at {root}", file=sys.stderr)
        return 1
    one_core()
    print("loading CDnet highway ...", file=sys.stderr)
    frames, labels, first, last = load(root)
    detectors: dict[str, Callable[[], Detector]] = {
        "porchlight (device/motion.py)": porchlight,
        "OpenCV accumulateWeighted diff": running_average,
        "OpenCV MOG2": lambda: opencv_subtractor(cv2.createBackgroundSubtractorMOG2()),
        "OpenCV KNN": lambda: opencv_subtractor(cv2.createBackgroundSubtractorKNN()),
    }
    h, w = frames[0].shape[:2]
    print(
        f"CDnet 2014 baseline/highway, {len(frames)} frames {w}x{h}, "
        f"scored frames {first}-{last}, one core"
    )
    print("| detector | F1 | precision | recall | frames/s |")
    print("|---|---|---|---|---|")
    for name, make in detectors.items():
        best = 0.0
        masks: list[np.ndarray] = []
        for _ in range(args.repeat):
            detect = make()
            start = time.perf_counter()
            masks = [detect(frame) for frame in frames]
            best = max(best, len(frames) / (time.perf_counter() - start))
        f1, precision, recall = score(masks, labels, first, last)
        print(f"| {name} | {f1:.3f} | {precision:.3f} | {recall:.3f} | {best:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
