"""Server-side bar charts (SVG drawn by the template from these numbers; no script, no styles)."""

from __future__ import annotations

from dataclasses import dataclass

LABELS = {
    "requests_received": "Requests received",
    "rejected_at_review": "Rejected at review",
    "approved": "Approved",
    "residents_asked": "Residents asked",
    "consents": "Residents who shared",
    "declines": "Residents who said no",
    "asks_expired": "Asks not answered (no)",
    "clips_shared": "Clips shared",
    "downloads": "Clip downloads",
    "purges": "Clips deleted",
}
BAR_AREA = 220  # px of the 400-px-wide viewBox given to the longest bar
ROW = 26


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    width: float
    y: int


def bars(counts: dict[str, int]) -> list[Bar]:
    """One bar per report line, scaled to the quarter's largest count."""
    top = max(counts.values(), default=0) or 1
    return [
        Bar(LABELS.get(name, name), value, BAR_AREA * value / top, i * ROW)
        for i, (name, value) in enumerate(counts.items())
    ]


def height(count: int) -> int:
    return count * ROW + 4
