"""Retention: delete clips past their age, and the oldest clips while the disk is too full.

Pinned clips (chosen for a pending consent and not yet uploaded) are never deleted, even if
that leaves the disk fuller than asked: a resident's decision outranks a quota.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from device.clipstore import ClipStore


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


DiskUsageFn = Callable[[Path], DiskUsage]


def filesystem_usage(path: Path) -> DiskUsage:
    usage = shutil.disk_usage(path)
    return DiskUsage(usage.total, usage.used, usage.free)


@dataclass
class RetentionResult:
    expired: list[str] = field(default_factory=list)
    for_space: list[str] = field(default_factory=list)
    pinned_kept: int = 0
    still_short_of_space: bool = False


def enforce_retention(
    store: ClipStore,
    *,
    now: datetime,
    max_age: timedelta,
    min_free_fraction: float,
    disk_usage: DiskUsageFn = filesystem_usage,
) -> RetentionResult:
    result = RetentionResult()
    clips = store.clips()  # oldest first
    remaining = []
    for clip in clips:
        if clip.end < now - max_age:
            if clip.pinned:
                result.pinned_kept += 1
                remaining.append(clip)
            else:
                store.delete(clip.id)
                result.expired.append(clip.id)
        else:
            remaining.append(clip)
    for clip in remaining:
        usage = disk_usage(store.clips_dir)
        if usage.free >= min_free_fraction * usage.total:
            break
        if clip.pinned:
            continue
        store.delete(clip.id)
        result.for_space.append(clip.id)
    else:
        usage = disk_usage(store.clips_dir)
        result.still_short_of_space = usage.free < min_free_fraction * usage.total
    return result
