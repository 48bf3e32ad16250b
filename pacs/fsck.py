"""Consistency check between the index and the object store (``cloudfilm fsck``)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from pacs.archive import Archive
from pacs.errors import CloudfilmError
from pacs.index.models import Instance

log = logging.getLogger(__name__)


@dataclass
class FsckReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # index rows whose object is gone
    wrong_size: list[str] = field(default_factory=list)
    wrong_hash: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # objects without an index row
    removed_orphans: int = 0

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.wrong_size) + len(self.wrong_hash) + len(self.orphans)


def fsck(archive: Archive, *, deep: bool = False, repair: bool = False, grace_s: float = 600.0,
         progress: Callable[[int], None] | None = None) -> FsckReport:
    """Check every index row has its object (size, and hash with ``deep``); list orphan objects.

    ``repair`` deletes orphan objects only: an orphan is what a crash between the object write and
    the index commit leaves, never something that was acknowledged. Orphans younger than
    ``grace_s`` are left alone: they may belong to an ingest still in flight. Rows with missing or damaged
    objects are reported, not deleted — that is for a human to decide.
    """
    report = FsckReport()
    indexed: set[str] = set()
    store = archive.store
    stmt = select(Instance.sop_uid, Instance.object_key, Instance.size_bytes, Instance.sha256)
    with archive.engine.connect() as conn:
        for sop_uid, key, size, sha in conn.execute(stmt).yield_per(1000):
            indexed.add(key)
            report.checked += 1
            info = store.head(key)
            if info is None:
                report.missing.append(f"{sop_uid} ({key})")
            elif info.size != size:
                report.wrong_size.append(f"{sop_uid} ({key}): {info.size} bytes, index says {size}")
            elif deep and _hash(archive, key) != sha:
                report.wrong_hash.append(f"{sop_uid} ({key})")
            if progress:
                progress(1)
    now = time.time()
    young: set[str] = set()
    for obj in store.list():
        if obj.key not in indexed:
            report.orphans.append(obj.key)
            if obj.modified is not None and now - obj.modified < grace_s:
                young.add(obj.key)
    if repair:
        # Re-check under the latest index state: an ingest may have committed meanwhile.
        with archive.engine.connect() as conn:
            for key in report.orphans:
                if key in young:
                    continue
                if conn.execute(select(Instance.id).where(Instance.object_key == key)).first() is None:
                    try:
                        store.delete(key)
                        report.removed_orphans += 1
                    except CloudfilmError as exc:
                        log.warning("could not remove orphan object %s: %s", key, exc)
    return report


def _hash(archive: Archive, key: str) -> str:
    digest = hashlib.sha256()
    with archive.store.open(key) as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
