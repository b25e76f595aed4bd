"""Reading the log for people: entry pages for auditors, the public quarterly transparency report,
and the public checkpoint summary. Data functions (no HTTP) so app/web pages can call them too.

The report counts log entries by action (the request lifecycle's actions, defined with the
requests domain and listed in docs/log-format.md) per calendar quarter of the entry's time, in
UTC. Anyone can recompute it from the verified log (`porchlight audit export`). It counts
integrated entries: one committed a moment ago appears within `log_integrate_interval_seconds`
(app.audit.integrator); a public page does not make the server integrate on demand.

Only completed quarters are published. A count that moves while a request is in flight tells
its requester what DESIGN promise 3 keeps from them: read before and after their request
opens, `residents_asked` rises by the number of cameras in their area, and `declines` by the
residents who said no. A quarter's counts appear once the quarter has ended, when they no
longer move with any one request.

A completed quarter can still hold one request only, in a small community: its requester knows
it was theirs and would read off how many residents were asked, declined, stayed silent or
shared. So a quarter with fewer than `MIN_APPROVED_REQUESTS` approved requests publishes only
the review lines (`PUBLISHED_ALWAYS`: received, rejected, approved, which tell a requester
nothing about residents); every line counted from asks and clips is withheld (None, JSON null)
with the quarter's `withheld` reason. There is no total across quarters, so no withheld count
can be recovered by subtracting the published quarters from one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit import integrator
from app.audit.models import LogEntry
from app.log import checkpoints
from app.log.keys import LogSigner
from app.log.models import LogAuditor, LogCosignature

# Report line -> the actions whose entries it counts (one entry per event). Both spellings of
# the lifecycle's actions are counted: the names the requests domain was asked to use and the
# ones docs/log-format.md defines (`clip:delete` for a purge), so the report never misses one.
REPORT_LINES: dict[str, tuple[str, ...]] = {
    "requests_received": ("request:submit",),
    "rejected_at_review": ("request:reject",),
    "approved": ("request:approve",),
    "residents_asked": ("ask:create",),
    "consents": ("ask:consent",),
    "declines": ("ask:decline",),
    "asks_expired": ("ask:expire",),
    "clips_shared": ("clip:share",),
    "downloads": ("clip:download",),
    "purges": ("clip:purge", "clip:delete"),
}
# Asks sent out in bulk are one `request:open` entry whose details.asks is how many.
ASKS_IN_DETAILS = "request:open"

# Lines about review only: published for every completed quarter. Every other line (a new one
# too) is counted from asks and clips, and is withheld from a quarter with too few requests.
PUBLISHED_ALWAYS = ("requests_received", "rejected_at_review", "approved")
# Below this many approved requests in a quarter, ask and clip counts describe one request's
# residents (or a few, each known to its requester) rather than a community's.
MIN_APPROVED_REQUESTS = 5
WITHHELD_REASON = (
    f"fewer than {MIN_APPROVED_REQUESTS} approved requests this quarter: counts of residents"
    " asked, consents, declines, expired asks, clips shared, downloads and purges would"
    " identify one request's residents"
)

# How each line is counted, for the report's readers (and `GET /api/transparency`).
REPORT_ACTIONS: dict[str, str] = {
    line: " + ".join(actions) for line, actions in REPORT_LINES.items()
}
REPORT_ACTIONS["residents_asked"] += f" + details.asks of {ASKS_IN_DETAILS}"


@dataclass(frozen=True)
class EntryView:
    """One entry as auditors read it: the indexed columns, the parsed entry, its bytes."""

    index: int
    time: str
    actor: str
    action: str
    subject: str
    details: Any
    entry: str  # base64 of the canonical bytes
    leaf_hash: str  # hex


def view(row: LogEntry) -> EntryView:
    """An entry row as auditors read it."""
    data = bytes(row.entry)
    try:
        document = json.loads(data)
        time, details = str(document["time"]), document.get("details")
    except (ValueError, KeyError, TypeError):
        # Served as stored even when unparseable: `audit verify` is what judges the bytes.
        time, details = row.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), None
    return EntryView(
        index=row.index,
        time=time,
        actor=row.actor,
        action=row.action,
        subject=row.subject,
        details=details,
        entry=base64.b64encode(data).decode("ascii"),
        leaf_hash=bytes(row.leaf_hash).hex(),
    )


def entries(
    session: Session, *, start: int = 0, limit: int = 100, subject: str | None = None
) -> list[EntryView]:
    """Entries with index >= start (optionally only about `subject`), in index order.

    Integrates pending entries first (in the caller's transaction, which it leaves holding the
    head lock until it ends), so everything committed before the call is listed.
    """
    integrator.catch_up(session)
    query = select(LogEntry).where(LogEntry.index >= start)
    if subject is not None:
        query = query.where(LogEntry.subject == subject)
    rows = session.scalars(query.order_by(LogEntry.index).limit(limit))
    return [view(row) for row in rows]


# The old private name, still used by app/web.
_view = view


@dataclass(frozen=True)
class QuarterReport:
    quarter: str  # "2026-Q4"
    start: datetime
    end: datetime
    counts: dict[str, int | None]  # None: withheld
    withheld: str | None = None  # why some counts are None (WITHHELD_REASON), else None

    @property
    def shown(self) -> dict[str, int]:
        """The counts that are published (every one unless `withheld`)."""
        return {line: count for line, count in self.counts.items() if count is not None}


def _quarter_start(moment: datetime) -> datetime:
    return datetime(moment.year, 3 * ((moment.month - 1) // 3) + 1, 1, tzinfo=UTC)


def _next_quarter(start: datetime) -> datetime:
    month = start.month + 3
    return datetime(start.year + (month > 12), (month - 1) % 12 + 1, 1, tzinfo=UTC)


# Said wherever the report is shown, so no one mistakes the missing current quarter for a gap.
PUBLICATION_NOTE = (
    "Only completed quarters are published: the current quarter is published when it ends."
)
# Said once wherever the report is shown; each withheld quarter carries WITHHELD_REASON.
WITHHOLDING_NOTE = (
    f"A quarter with fewer than {MIN_APPROVED_REQUESTS} approved requests shows only requests"
    " received, rejected at review and approved; its counts of residents asked, consents,"
    " declines, expired asks, clips shared, downloads and purges are withheld, because they"
    " would tell a requester who knows the request was theirs how its residents answered."
    " There is no all-time total, so withheld counts cannot be worked out by subtraction."
)


def quarter_name(start: datetime) -> str:
    return f"{start.year}-Q{(start.month - 1) // 3 + 1}"


@dataclass(frozen=True)
class CurrentQuarter:
    """The quarter in progress: withheld from the report until `end`."""

    quarter: str
    start: datetime
    end: datetime


def current_quarter(now: datetime) -> CurrentQuarter:
    start = _quarter_start(now.astimezone(UTC))
    return CurrentQuarter(quarter_name(start), start, _next_quarter(start))


def transparency_report(session: Session, now: datetime) -> list[QuarterReport]:
    """Counts per completed quarter, from the first quarter with a counted entry to the last
    one that has ended by `now` (the current quarter is published when it ends)."""
    actions = [action for group in REPORT_LINES.values() for action in group]
    first = session.scalar(
        select(func.min(LogEntry.created_at)).where(
            LogEntry.action.in_([*actions, ASKS_IN_DETAILS])
        )
    )
    if isinstance(first, str):  # SQLite aggregates bypass the column type
        first = datetime.fromisoformat(first)
    if first is not None and first.tzinfo is None:
        first = first.replace(tzinfo=UTC)
    reports: list[QuarterReport] = []
    if first is None:
        return reports
    quarter, withheld = _quarter_start(first), current_quarter(now).start
    while quarter < withheld:
        end = _next_quarter(quarter)
        in_quarter = (LogEntry.created_at >= quarter, LogEntry.created_at < end)
        rows = session.execute(
            select(LogEntry.action, func.count())
            .where(LogEntry.action.in_(actions), *in_quarter)
            .group_by(LogEntry.action)
        )
        by_action = {action: int(count) for action, count in rows}
        counts = {
            line: sum(by_action.get(action, 0) for action in group)
            for line, group in REPORT_LINES.items()
        }
        counts["residents_asked"] += sum(
            _asks(bytes(data))
            for data in session.scalars(
                select(LogEntry.entry).where(LogEntry.action == ASKS_IN_DETAILS, *in_quarter)
            )
        )
        reports.append(_published(quarter_name(quarter), quarter, end, counts))
        quarter = end
    return reports


def _published(name: str, start: datetime, end: datetime, counts: dict[str, int]) -> QuarterReport:
    """The quarter as published: ask and clip counts withheld below MIN_APPROVED_REQUESTS."""
    if counts["approved"] >= MIN_APPROVED_REQUESTS:
        return QuarterReport(name, start, end, dict(counts))
    published: dict[str, int | None] = {
        line: count if line in PUBLISHED_ALWAYS else None for line, count in counts.items()
    }
    return QuarterReport(name, start, end, published, withheld=WITHHELD_REASON)


def _asks(entry: bytes) -> int:
    try:
        value = json.loads(entry)["details"]["asks"]
    except (ValueError, KeyError, TypeError):
        return 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True)
class PublicLog:
    """What the public page shows: the latest checkpoint, cosigned, and how to check it."""

    origin: str
    verifier_key: str
    size: int
    root_hash: str  # base64, as in the checkpoint
    published_at: datetime | None
    checkpoint: str  # the signed note with cosignatures
    cosigners: list[str]  # names of the auditor keys that cosigned it
    auditor_keys: list[str]  # every registered, unrevoked cosigner verifier key


def public_log(session: Session, signer: LogSigner) -> PublicLog | None:
    """The current cosigned checkpoint and verifier key (None before the first checkpoint)."""
    row = checkpoints.latest(session)
    if row is None:
        return None
    names: Sequence[str] = session.scalars(
        select(LogAuditor.name)
        .join(LogCosignature, LogCosignature.auditor_id == LogAuditor.id)
        .where(LogCosignature.checkpoint_id == row.id)
        .order_by(LogAuditor.name)
    ).all()
    keys = session.scalars(
        select(LogAuditor.verifier_key)
        .where(LogAuditor.revoked_at.is_(None))
        .order_by(LogAuditor.id)
    ).all()
    return PublicLog(
        origin=signer.origin,
        verifier_key=signer.verifier_key,
        size=row.size,
        root_hash=base64.b64encode(bytes(row.root_hash)).decode("ascii"),
        published_at=row.created_at,
        checkpoint=checkpoints.served_text(session, row),
        cosigners=list(names),
        auditor_keys=list(keys),
    )
