"""The in-process periodic job that enforces deadlines and retention (DESIGN "Closed / expired").

Each run, in order, each step in its own transaction(s):
1. asks still pending at their deadline -> expired (silence is "no");
2. open requests past their deadline -> closed (the access window starts);
3. closed requests past the access window -> expired, their shared clips purged (logged);
4. blobs of purged clips (expiry or revocation) deleted from the clip store, each deletion
   logged, then temporaries of crashed uploads swept;
5. device-call nonces too old to pass the timestamp check forgotten (bookkeeping, not logged).
Every step selects by state, so a run repeated, interrupted or racing another process's run
does the remaining work once and nothing twice. `run_once` is what tests call with their clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.audit import service as audit
from app.clipstore import ClipStore
from app.devices import service as devices
from app.requests.models import Ask, FootageRequest, SharedClip
from app.requests.service import close_request
from app.requests.transitions import ask_transition, request_transition

log = logging.getLogger(__name__)
BATCH = 500
INTERVAL_SECONDS = 60.0
TEMPORARY_MAX_AGE_SECONDS = 24 * 3600.0


@dataclass
class RunReport:
    asks_expired: int = 0
    requests_closed: int = 0
    requests_expired: int = 0
    clips_purged: int = 0
    blobs_deleted: int = 0
    temporaries_swept: int = 0
    nonces_forgotten: int = 0


def _expire_asks(session: Session, now: datetime) -> int:
    asks = session.scalars(
        select(Ask)
        .where(Ask.state == "pending", Ask.deadline <= now)
        .order_by(Ask.deadline, Ask.id)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    for ask in asks:
        ask_transition(session, ask, "expire", "system", now, {"reason": "deadline passed"})
        ask.answered_at = now
    return len(asks)


def _close_requests(session: Session, now: datetime) -> int:
    requests = session.scalars(
        select(FootageRequest)
        .where(FootageRequest.state == "open", FootageRequest.deadline <= now)
        .with_for_update(skip_locked=True)
    ).all()
    for footage_request in requests:
        close_request(session, footage_request, "system", now)
    return len(requests)


def _expire_requests(session: Session, now: datetime) -> tuple[int, int]:
    requests = session.scalars(
        select(FootageRequest)
        .where(FootageRequest.state == "closed", FootageRequest.access_until <= now)
        .with_for_update(skip_locked=True)
    ).all()
    purged = 0
    for footage_request in requests:
        clips = session.scalars(
            select(SharedClip)
            .join(Ask, Ask.id == SharedClip.ask_id)
            .where(Ask.request_id == footage_request.id, SharedClip.purged_at.is_(None))
            .order_by(SharedClip.id)
        ).all()
        for clip in clips:
            clip.purged_at = now
        request_transition(
            session,
            footage_request,
            "expire",
            "system",
            now,
            # Each blob's deletion gets its own clip:delete entry naming it.
            {"purged": len(clips)},
        )
        footage_request.expired_at = now
        purged += len(clips)
    return len(requests), purged


def _delete_blobs(session: Session, store: ClipStore, now: datetime) -> int:
    clips = session.scalars(
        select(SharedClip)
        .where(SharedClip.purged_at.is_not(None), SharedClip.blob_deleted_at.is_(None))
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    for clip in clips:
        # Deleted before the commit that records it: a crash in between leaves a record
        # still to do, and deleting an already missing blob is harmless.
        store.delete(clip.blob_key)
        clip.blob_deleted_at = now
        audit.append(
            session,
            "system",
            "clip:delete",
            f"shared_clip:{clip.id}",
            {"ciphertext_sha256": clip.ciphertext_sha256, "size": clip.size},
            now=now,
        )
    return len(clips)


def run_once(
    factory: sessionmaker[Session],
    store: ClipStore,
    now: datetime,
    nonce_max_age: timedelta | None = None,
) -> RunReport:
    """One idempotent pass over every deadline; safe to call at any time, from any process.

    `nonce_max_age` (twice the allowed device clock skew) enables step 5.
    """
    report = RunReport()

    def until_done(step: Callable[[Session], int]) -> int:
        total = 0
        while True:
            with factory() as session, session.begin():
                done = step(session)
            total += done
            if done < BATCH:
                return total

    report.asks_expired = until_done(lambda s: _expire_asks(s, now))
    with factory() as session, session.begin():
        report.requests_closed = _close_requests(session, now)
    with factory() as session, session.begin():
        report.requests_expired, report.clips_purged = _expire_requests(session, now)
    report.blobs_deleted = until_done(lambda s: _delete_blobs(s, store, now))
    report.temporaries_swept = store.sweep_temporary(TEMPORARY_MAX_AGE_SECONDS)
    if nonce_max_age is not None:
        with factory() as session, session.begin():
            report.nonces_forgotten = devices.forget_nonces(session, now - nonce_max_age)
    return report


class Scheduler:
    """Runs `run_once` every `interval` seconds on a daemon thread until `stop()`."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        store: ClipStore,
        clock: Callable[[], datetime],
        interval: float = INTERVAL_SECONDS,
        nonce_max_age: timedelta | None = None,
    ) -> None:
        self._factory, self._store, self._clock = factory, store, clock
        self._interval, self._nonce_max_age = interval, nonce_max_age
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="porchlight-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                report = run_once(self._factory, self._store, self._clock(), self._nonce_max_age)
                if any(value for name, value in vars(report).items() if name != "nonces_forgotten"):
                    log.info("scheduler run: %s", report)
            except Exception:  # one failed run must not stop later ones
                log.exception("scheduler run failed; retrying next interval")
