"""bench/seal.py runs end to end on a small file and prints its table and floor lines.

The bench's timed code runs in child processes from strings (LIBRARY_RUN, MAP_RUN) that no
linter or type checker sees; this runs them once, on 16 MiB, so a broken one fails here
rather than an hour into a measurement.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "seal.py"


def test_the_seal_bench_runs_and_prints_every_row(tmp_path: Path, age_binary: str) -> None:
    if not os.path.exists("/usr/bin/time"):
        message = "GNU time is not installed (`make test` installs it: apt-get install time)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [sys.executable, str(BENCH), "--size-mib", "16", "--repeat", "1", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = [line for line in done.stdout.splitlines() if line.startswith("| encrypt")]
    rows += [line for line in done.stdout.splitlines() if line.startswith("| decrypt")]
    assert len(rows) == 12
    for direction in ("encrypt", "decrypt"):
        if "openssl speed" in done.stdout:
            floor = next(
                line for line in done.stdout.splitlines() if line.startswith(f"{direction}: floor")
            )
            assert re.search(r"mapping the input\) / \d+ = [\d.]+ s", floor)
            assert re.search(r"our library call used [\d.]+ s CPU", floor)
    # The work directory is removed afterwards.
    assert not any(tmp_path.iterdir())
