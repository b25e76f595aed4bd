"""The benches refuse arguments they cannot run with: a message naming the option and exit
status 2 (argparse's), not a traceback minutes into a run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run(script: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "PORCHLIGHT_TEST_POSTGRES_URL"}
    return subprocess.run(
        [sys.executable, str(BENCH / script), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )


@pytest.mark.parametrize(
    ("script", "arguments", "message"),
    [
        ("clip_writes.py", ["--repeat", "0"], "must be at least 1"),
        ("rollback.py", ["--pairs", "0"], "must be at least 1"),
        ("clip_writes.py", ["--size-mib", "-1"], "must be at least 1"),
        ("seal.py", ["--repeat", "0"], "--size-mib and --repeat must be at least 1"),
        ("seal.py", ["--size-mib", "-1"], "--size-mib and --repeat must be at least 1"),
        ("log.py", ["--appends", "0"], "--appends must be at least 1"),
        ("log.py", ["--verify-reads", "0"], "--verify-reads must be at least 1"),
        ("log.py", ["--entries", "-5"], "--entries cannot be negative"),
        ("log.py", ["--writers", "8,0"], "each count must be at least 1"),
        ("log.py", ["--writers", "8,x"], "not a list of counts"),
        ("log.py", ["--only", "postgresql"], "give --postgres URL or set"),
    ],
)
def test_a_bench_refuses_what_it_cannot_run(
    script: str, arguments: list[str], message: str
) -> None:
    done = _run(script, *arguments)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
