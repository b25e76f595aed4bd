"""Frames per second of the whole camera pipeline against the H.264 encoder alone, one core.

For each resolution the OpenCV sample vtest.avi (people walking all the time, so the agent
records throughout) is first transcoded to an H.264 input at that size in a temporary directory.
Then, each in its own process pinned to one core (OpenCV one thread, x264 one thread):

* encoder only: the `H264Encoder` over frames already in memory (the floor for this design);
* pipeline, no decoding: the real `Agent` (mask, motion, encoder, recorder, age encryption,
  clip store) fed the same in-memory frames;
* pipeline with decoding: the `Agent` reading the H.264 file through `FileSource --fast`.

Peak RSS is the child's VmHWM; the in-memory modes hold their frame pool, so their RSS
is not the agent's. Run: .venv/bin/python bench/device.py [--frames 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = [(640, 480), (1280, 720), (1920, 1080)]
FPS = 30.0
POOL = 32


def one_core() -> None:
    import cv2

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)


def make_input(src: Path, dst: Path, size: tuple[int, int], frames: int) -> None:
    import av
    import cv2

    from device.encoder import H264Encoder

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=int(FPS))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for n, frame in enumerate(inp.decode(video=0)):
            if n >= frames:
                break
            image = cv2.resize(frame.to_ndarray(format="bgr24"), size)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode(None))
    del H264Encoder


def pool(path: Path) -> list:
    from device.sources import FileSource

    return [
        f.image for _, f in zip(range(POOL), FileSource(path, fast=True).frames(), strict=False)
    ]


class MemorySource:
    def __init__(self, images: list, frames: int) -> None:
        self.images, self.count, self.fps = images, frames, FPS

    def frames(self) -> Iterator:
        from device.sources import Frame

        for i in range(self.count):
            # Cycle forwards then backwards so the pool plays as continuous motion.
            k = i % (2 * len(self.images) - 2)
            k = k if k < len(self.images) else 2 * len(self.images) - 2 - k
            # No copy: the agent only writes into frames to apply masks, which is idempotent.
            yield Frame(self.images[k], i / FPS)

    def stop(self) -> None:
        pass


def child(mode: str, path: Path, frames: int) -> dict[str, float]:
    one_core()
    from device.agent import Agent
    from device.config import config_template, parse_config
    from device.encoder import H264Encoder
    from device.keys import create_device_key
    from device.sources import FileSource
    from porchlight.age import generate_identity

    images = pool(path) if mode != "pipeline+decode" else []
    if mode == "encoder":
        h, w = images[0].shape[:2]
        encoder = H264Encoder(w, h, FPS, threads=1)
        start = time.perf_counter()
        for i in range(frames):
            encoder.encode(images[i % len(images)], i / FPS)
        encoder.flush()
        elapsed = time.perf_counter() - start
        clips = 0
    else:
        with tempfile.TemporaryDirectory() as data:
            data_dir = Path(data)
            create_device_key(data_dir)
            text = config_template("0", [str(generate_identity("pq").recipient())], None)
            config = parse_config(text.replace("encoder_threads = 0", "encoder_threads = 1"))
            source = (
                FileSource(path, fast=True)
                if mode == "pipeline+decode"
                else MemorySource(images, frames)
            )
            agent = Agent(config, data_dir, source, wall_start=datetime.now(UTC))
            start = time.perf_counter()
            summary = agent.run()
            elapsed = time.perf_counter() - start
            frames, clips = summary.frames, summary.clips
    return {"fps": frames / elapsed, "rss_mib": peak_rss_mib(), "clips": clips}


def peak_rss_mib() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec,
    # so a child would report the bench driver's own peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; best fps is kept")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.frames)))
        return 0
    from tests.testdata import testdata_root

    video = testdata_root() / "video" / "vtest.avi"
    if not video.exists():
        print(f"bench/device.py: test data not found at {video}", file=sys.stderr)
        return 1
    print(
        f"{args.frames} frames per run at {FPS:g} fps input, one core, x264 veryfast crf 26, "
        f"best of {args.repeat} (peak RSS: the largest)"
    )
    print(
        "| resolution | encoder only fps | pipeline fps (no decode) | ratio "
        "| pipeline+decode fps | x real time | peak RSS with decode |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            path = Path(tmp) / f"in-{size[0]}x{size[1]}.mp4"
            print(f"preparing {path.name} ...", file=sys.stderr)
            make_input(video, path, size, args.frames)
            results: dict[str, dict[str, float]] = {}
            # Modes interleaved, best fps of --repeat runs: the machine may be shared.
            for _ in range(args.repeat):
                for mode in ("encoder", "pipeline", "pipeline+decode"):
                    command = [sys.executable, __file__, "--frames", str(args.frames)]
                    command += ["--child", mode, str(path)]
                    out = subprocess.run(command, capture_output=True, text=True, check=True)
                    run = json.loads(out.stdout.strip().splitlines()[-1])
                    best = results.setdefault(mode, run)
                    best["fps"] = max(best["fps"], run["fps"])
                    best["rss_mib"] = max(best["rss_mib"], run["rss_mib"])
            enc, pipe, dec = results["encoder"], results["pipeline"], results["pipeline+decode"]
            print(
                f"| {size[0]}x{size[1]} | {enc['fps']:.1f} | {pipe['fps']:.1f} | "
                f"{pipe['fps'] / enc['fps']:.2f} | {dec['fps']:.1f} | {dec['fps'] / FPS:.1f}x | "
                f"{dec['rss_mib']:.0f} MiB |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
