"""The transfer progress bar: on stderr when it is a terminal (or forced), silent otherwise."""

from __future__ import annotations

import io

from porchlight.client import ProgressBar


def test_progress_bar_draws_percentages_and_a_summary() -> None:
    stream = io.StringIO()
    bar = ProgressBar("clip.age", stream=stream, force=True)
    for done in (0, 250_000, 500_000, 500_001, 1_000_000):
        bar(done, 1_000_000)
    bar.finish(1_000_000)
    text = stream.getvalue()
    assert "  0%" in text and " 25%" in text and " 50%" in text and "100%" in text
    assert text.count(" 50%") == 1  # an unchanged percentage is not redrawn
    assert "[#########################]" in text
    assert "MB/s" in text and text.endswith("\n")


def test_progress_bar_without_a_length_shows_bytes() -> None:
    stream = io.StringIO()
    bar = ProgressBar("clip.age", stream=stream, force=True)
    bar(3_500_000, None)
    assert "3.5 MB" in stream.getvalue()


def test_progress_bar_is_silent_off_a_terminal() -> None:
    stream = io.StringIO()  # not a TTY
    bar = ProgressBar("clip.age", stream=stream)
    bar(1, 2)
    bar.finish(2)
    assert stream.getvalue() == ""
