"""The sealed clip store: age files, signed manifests and a SQLite index, crash-safe.

Layout under ``<data>/clips/``: ``<id>.age`` (the clip, encrypted to the homeowner),
``<id>.json`` (its manifest, signed by the device key, see porchlight.manifest) and, while a
clip is being written, ``<id>.age.partial`` / ``<id>.json.partial``. A clip reaches its final
names only after its bytes are fsynced, manifest first, then the clip, then the directory; the
index row is added last. So after a power cut every final name is complete, and `recover`
only has to delete partials (and a manifest whose clip never reached its final name), drop
index rows whose files are gone and re-index complete clips whose row was lost.

A finished clip that does not verify is never deleted by recovery: its ciphertext may well
still open with the homeowner's identity (the usual cause is a replaced device signing key,
which makes every manifest fail at once). It is moved, still encrypted, with its manifest to
``<data>/quarantine/`` and left there for the homeowner to look at.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from porchlight.age import AgeError, Identity, Recipient, decryptor, encryptor
from porchlight.manifest import (
    ClipManifest,
    ManifestError,
    format_time,
    parse_time,
    public_key_text,
    sign_manifest,
    verify_manifest,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    id TEXT PRIMARY KEY,
    start TEXT NOT NULL,
    end TEXT NOT NULL,
    duration REAL NOT NULL,
    motion_score REAL,
    size INTEGER NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0
)
"""


class ClipStoreError(Exception):
    """A clip that does not exist, or does not verify."""


@dataclass(frozen=True)
class ClipRecord:
    id: str
    start: datetime
    end: datetime
    duration: float
    motion_score: float | None
    size: int
    pinned: bool

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "start": format_time(self.start),
            "end": format_time(self.end),
            "duration": round(self.duration, 3),
            "motion_score": None if self.motion_score is None else round(self.motion_score, 4),
            "size": self.size,
            "pinned": self.pinned,
        }


QUARANTINE_DIR = "quarantine"


@dataclass
class RecoveryReport:
    partials_removed: list[str] = field(default_factory=list)
    reindexed: list[str] = field(default_factory=list)
    # Clip id -> why it was set aside in the quarantine directory (still encrypted).
    quarantined: dict[str, str] = field(default_factory=dict)
    # Manifests left by a clip that never reached its final name: they hold no footage.
    manifests_removed: list[str] = field(default_factory=list)
    missing_dropped: list[str] = field(default_factory=list)
    kept: int = 0

    @property
    def changed(self) -> bool:
        return bool(
            self.partials_removed
            or self.reindexed
            or self.quarantined
            or self.manifests_removed
            or self.missing_dropped
        )

    def summary(self) -> str:
        text = (
            f"kept {self.kept} clips; removed {len(self.partials_removed)} unfinished files "
            f"and {len(self.manifests_removed)} manifests without a clip; "
            f"re-indexed {len(self.reindexed)}; "
            f"dropped {len(self.missing_dropped)} index rows without files"
        )
        if self.quarantined:
            text += (
                f"; set aside {len(self.quarantined)} clips that do not verify "
                f"(still encrypted, in {QUARANTINE_DIR}/)"
            )
        return text


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _CiphertextFile:
    """The .partial file, hashing and counting the ciphertext as the encryptor writes it."""

    def __init__(self, path: Path) -> None:
        self.handle = path.open("xb")
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += len(view)
        return self.handle.write(view)

    def flush(self) -> None:
        self.handle.flush()


def new_clip_id(start: datetime) -> str:
    # Sortable by time, unique without coordination; matches the manifest's id alphabet.
    return f"{format_time(start)[:19].replace('-', '').replace(':', '')}Z-{secrets.token_hex(3)}"


class OpenClip:
    """A clip being written: write plaintext MP4 bytes, then `seal` (or `abort`)."""

    def __init__(self, store: ClipStore, clip_id: str, start: datetime) -> None:
        self.store = store
        self.id = clip_id
        self.start = start
        self.partial = store.clips_dir / f"{clip_id}.age.partial"
        self._cipher = _CiphertextFile(self.partial)
        self._age = encryptor(self._cipher, store.recipients)  # type: ignore[arg-type]
        self._open = True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._open:  # an aborted clip swallows what its muxer still flushes
            self._age.write(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def seal(
        self, end: datetime, duration: float, motion_score: float, plaintext_sha256: str
    ) -> ClipRecord:
        """Finish encryption, sign the manifest and move both to their final names."""
        store = self.store
        self._age.close()
        self._cipher.handle.flush()
        os.fsync(self._cipher.handle.fileno())
        self._cipher.handle.close()
        self._open = False
        manifest = ClipManifest(
            clip_id=self.id,
            device_key=public_key_text(store.device_public_key),
            start=format_time(self.start),
            end=format_time(end),
            plaintext_sha256=plaintext_sha256,
            ciphertext_sha256=self._cipher.sha256.hexdigest(),
            ciphertext_size=self._cipher.size,
        )
        if store.device_key is None:
            raise ClipStoreError("the store was opened without the device signing key")
        manifest_partial = store.clips_dir / f"{self.id}.json.partial"
        with manifest_partial.open("xb") as handle:
            handle.write(sign_manifest(manifest, store.device_key))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(manifest_partial, store.manifest_path(self.id))
        os.replace(self.partial, store.clip_path(self.id))
        _fsync_dir(store.clips_dir)
        record = ClipRecord(
            self.id,
            manifest.start_time,
            manifest.end_time,
            duration,
            motion_score,
            self._cipher.size,
            False,
        )
        store._insert(record)
        return record

    def abort(self) -> None:
        if self._open:
            self._cipher.handle.close()
            self._open = False
        self.partial.unlink(missing_ok=True)


class ClipStore:
    def __init__(
        self,
        data_dir: Path,
        *,
        device_key: Ed25519PrivateKey | None = None,
        device_public_key: Ed25519PublicKey | None = None,
        recipients: Sequence[Recipient] = (),
    ) -> None:
        if device_key is None and device_public_key is None:
            raise ValueError("a clip store needs the device key or its public half")
        self.device_key = device_key
        self.device_public_key = device_public_key or device_key.public_key()  # type: ignore[union-attr]
        self.recipients = list(recipients)
        self.clips_dir = data_dir / "clips"
        self.quarantine_dir = data_dir / QUARANTINE_DIR
        self.clips_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            data_dir / "clips.sqlite", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def clip_path(self, clip_id: str) -> Path:
        return self.clips_dir / f"{clip_id}.age"

    def manifest_path(self, clip_id: str) -> Path:
        return self.clips_dir / f"{clip_id}.json"

    # -- writing ---------------------------------------------------------------------------
    def begin(self, start: datetime) -> OpenClip:
        if not self.recipients:
            raise ClipStoreError("no recipients configured to encrypt clips to")
        return OpenClip(self, new_clip_id(start), start)

    def _insert(self, record: ClipRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO clips VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                format_time(record.start),
                format_time(record.end),
                record.duration,
                record.motion_score,
                record.size,
                int(record.pinned),
            ),
        )

    # -- reading ---------------------------------------------------------------------------
    def clips(self) -> list[ClipRecord]:
        rows = self._db.execute("SELECT * FROM clips ORDER BY start, id").fetchall()
        return [
            ClipRecord(r[0], parse_time(r[1]), parse_time(r[2]), r[3], r[4], r[5], bool(r[6]))
            for r in rows
        ]

    def get(self, clip_id: str) -> ClipRecord:
        for record in self.clips():
            if record.id == clip_id:
                return record
        raise ClipStoreError(f"no clip {clip_id!r} in this device's store")

    def manifest(self, clip_id: str) -> ClipManifest:
        try:
            data = self.manifest_path(clip_id).read_bytes()
        except FileNotFoundError:
            raise ClipStoreError(f"clip {clip_id} has no manifest") from None
        try:
            return verify_manifest(data, self.device_public_key)
        except ManifestError as error:
            raise ClipStoreError(f"clip {clip_id}: {error}") from None

    def verify(self, clip_id: str) -> ClipManifest:
        """Check the manifest signature and the ciphertext's size and SHA-256."""
        manifest = self.manifest(clip_id)
        path = self.clip_path(clip_id)
        if not path.exists():
            raise ClipStoreError(f"clip {clip_id} has no ciphertext file")
        if path.stat().st_size != manifest.ciphertext_size:
            raise ClipStoreError(f"clip {clip_id} is not the size its manifest says")
        if _sha256_file(path) != manifest.ciphertext_sha256:
            raise ClipStoreError(f"clip {clip_id} does not match its manifest's SHA-256")
        return manifest

    def decrypt(self, clip_id: str, identities: Sequence[Identity], out: BinaryIO) -> ClipManifest:
        """Verify, then decrypt into ``out``; the plaintext hash is checked at the end."""
        manifest = self.verify(clip_id)
        digest = hashlib.sha256()
        try:
            with self.clip_path(clip_id).open("rb") as src:
                reader = decryptor(src, identities)
                while chunk := reader.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except AgeError as error:
            raise ClipStoreError(f"clip {clip_id} does not decrypt: {error}") from None
        if digest.hexdigest() != manifest.plaintext_sha256:
            raise ClipStoreError(f"clip {clip_id}: decrypted video does not match its manifest")
        return manifest

    # -- deleting and pinning --------------------------------------------------------------
    def set_pinned(self, clip_id: str, pinned: bool) -> None:
        """Pin a clip chosen for a pending consent: retention never deletes it."""
        self.get(clip_id)
        self._db.execute("UPDATE clips SET pinned = ? WHERE id = ?", (int(pinned), clip_id))

    def delete(self, clip_id: str) -> None:
        # Index row first: a crash in between leaves files that recovery re-checks.
        self._db.execute("DELETE FROM clips WHERE id = ?", (clip_id,))
        self.clip_path(clip_id).unlink(missing_ok=True)
        self.manifest_path(clip_id).unlink(missing_ok=True)

    def total_size(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM clips").fetchone()
        return int(row[0])

    # -- crash recovery --------------------------------------------------------------------
    def _final_ids(self) -> Iterator[str]:
        for path in self.clips_dir.iterdir():
            if path.suffix == ".age":
                yield path.stem

    def quarantine(self, clip_id: str) -> Path:
        """Move a clip and its manifest, as they are, out of the store into the quarantine."""
        self.quarantine_dir.mkdir(mode=0o700, exist_ok=True)
        name = clip_id
        while any((self.quarantine_dir / f"{name}{ext}").exists() for ext in (".age", ".json")):
            name = f"{clip_id}-{secrets.token_hex(2)}"  # an earlier one of the same id is kept
        # Files before the index row: a crash in between leaves a row without files, which
        # the next recovery drops; never a row pointing into the quarantine.
        for source, ext in (
            (self.manifest_path(clip_id), ".json"),
            (self.clip_path(clip_id), ".age"),
        ):
            if source.exists():
                os.rename(source, self.quarantine_dir / f"{name}{ext}")
        _fsync_dir(self.quarantine_dir)
        _fsync_dir(self.clips_dir)
        self._db.execute("DELETE FROM clips WHERE id = ?", (clip_id,))
        return self.quarantine_dir / f"{name}.age"

    def quarantined(self) -> list[Path]:
        """The clips recovery set aside (their .age files), oldest name first."""
        if not self.quarantine_dir.is_dir():
            return []
        return sorted(self.quarantine_dir.glob("*.age"))

    def _set_aside(self, report: RecoveryReport, clip_id: str, reason: str) -> None:
        moved = self.quarantine(clip_id)
        report.quarantined[clip_id] = reason
        log.error(
            "clip %s does not verify (%s): moved, still encrypted, to %s", clip_id, reason, moved
        )

    def recover(self) -> RecoveryReport:
        """Make the store consistent after a crash or power cut; returns what was done.

        Deletes only unfinished files; a finished clip that does not verify goes to the
        quarantine directory instead (see the module docstring).
        """
        report = RecoveryReport()
        for path in sorted(self.clips_dir.iterdir()):
            if path.name.endswith(".partial") and path.is_file():
                path.unlink()
                report.partials_removed.append(path.name)
        indexed = {r.id: r for r in self.clips()}
        for clip_id, record in indexed.items():
            path = self.clip_path(clip_id)
            if not path.exists():
                self._db.execute("DELETE FROM clips WHERE id = ?", (clip_id,))
                report.missing_dropped.append(clip_id)
                if self.manifest_path(clip_id).exists():
                    self.manifest_path(clip_id).unlink()
                    report.manifests_removed.append(f"{clip_id}.json")
                continue
            try:
                manifest = self.manifest(clip_id)
            except ClipStoreError as error:
                self._set_aside(report, clip_id, str(error))
                continue
            if manifest.ciphertext_size != path.stat().st_size:
                self._set_aside(report, clip_id, "not the size its manifest says")
                continue
            if record.size != manifest.ciphertext_size:
                # The signed manifest is the authority; the index only caches it.
                self._db.execute(
                    "UPDATE clips SET size = ? WHERE id = ?", (manifest.ciphertext_size, clip_id)
                )
            report.kept += 1
        for clip_id in sorted(set(self._final_ids()) - set(indexed)):
            # Renamed into place but not indexed: index it only if it fully verifies.
            try:
                manifest = self.verify(clip_id)
            except ClipStoreError as error:
                self._set_aside(report, clip_id, str(error))
                continue
            start, end = manifest.start_time, manifest.end_time
            self._insert(
                ClipRecord(
                    clip_id,
                    start,
                    end,
                    (end - start).total_seconds(),
                    None,
                    manifest.ciphertext_size,
                    False,
                )
            )
            report.reindexed.append(clip_id)
            report.kept += 1
        known = set(self._final_ids())
        for path in sorted(self.clips_dir.glob("*.json")):
            if path.stem not in known:
                # Sealing renames the manifest first: this is a clip that never got its .age.
                path.unlink()
                report.manifests_removed.append(path.name)
        return report


def utc_span(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)
