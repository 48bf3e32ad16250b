"""Consistency check between the index and the object store (``cloudfilm fsck``), and the removal
of what killed writes leave behind (also run when ``serve`` and ``worker`` start)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import text

from pacs.archive import Archive
from pacs.errors import CloudfilmError
from pacs.storage.filesystem import sweep_files
from pacs.storage.references import index_tables, is_instance_key, is_referenced, referenced_sql

log = logging.getLogger(__name__)


@dataclass
class FsckReport:
    checked: int = 0  # indexed objects: instances and the reserved-prefix objects (packages)
    checked_instances: int = 0
    missing: list[str] = field(default_factory=list)  # index rows whose object is gone
    wrong_size: list[str] = field(default_factory=list)
    wrong_hash: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # objects without an index row
    removed_orphans: int = 0
    leftovers: list[str] = field(default_factory=list)  # temp, staging and spool files of killed writes
    removed_leftovers: int = 0

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.wrong_size) + len(self.wrong_hash) + len(self.orphans) + len(self.leftovers)

    @property
    def repaired(self) -> int:
        return self.removed_orphans + self.removed_leftovers


#: Files in the spool directory: STOW-RS parts (``viewer_api.dicomweb.multipart``) and C-STORE
#: datasets (``pacs.dimse.provider``) too large for memory, each deleted once ingested.
SPOOL_FILES = ("stow-*.part", "cstore-*.part", "zip-*")  # STOW-RS parts, C-STORE data sets, study ZIPs


def sweep_leftovers(archive: Archive, older_than_s: float, *, remove: bool) -> list[str]:
    """Temp, staging and spool files not written for ``older_than_s`` seconds; removed unless ``remove``
    is false. They belong to writes whose process died: nothing in them was acknowledged (an
    instance is acknowledged once its object is published under its key and indexed)."""
    found = list(archive.store.cleanup_temp(older_than_s, remove=remove))
    found += sweep_files(archive.settings.spool_dir, SPOOL_FILES, older_than_s, remove=remove)
    return found


def housekeep(archive: Archive) -> None:
    """At ``serve``/``worker`` start: remove the leftovers older than ``LEFTOVER_GRACE``. Never raises:
    an unreachable store is reported by the health checks, not by a refusal to start."""
    try:
        removed = sweep_leftovers(archive, archive.settings.leftover_grace, remove=True)
    except CloudfilmError as exc:
        log.warning("leftovers of interrupted writes not removed: %s", exc)
        return
    if removed:
        log.info("removed %d leftover(s) of interrupted writes: %s", len(removed), ", ".join(removed[:10])
                 + (" …" if len(removed) > 10 else ""))  # fmt: skip


def fsck(archive: Archive, *, deep: bool = False, repair: bool = False, grace_s: float | None = None,
         progress: Callable[[int], None] | None = None) -> FsckReport:
    """Check every object the index names has its object (size, and hash with ``deep``): instances
    and the reserved-prefix objects of :mod:`pacs.storage.references` (uploaded packages); list
    orphan objects (named by no row, whatever their prefix) and leftovers of killed writes
    (:func:`sweep_leftovers`).

    ``repair`` deletes orphan objects and leftovers only: an orphan is what a crash between the
    object write and the index commit leaves, never something that was acknowledged. Both younger
    than ``grace_s`` (default ``LEFTOVER_GRACE``) are left alone: they may belong to an ingest still
    in flight. Rows with missing or damaged objects are reported, not deleted — that is for a human
    to decide.
    """
    grace_s = archive.settings.leftover_grace if grace_s is None else grace_s
    report = FsckReport()
    report.leftovers = sweep_leftovers(archive, grace_s, remove=repair)
    if repair:
        report.removed_leftovers = len(report.leftovers)
    indexed: set[str] = set()
    store = archive.store
    with archive.engine.connect() as conn:
        tables = index_tables(conn)
        for key, size, sha in conn.execute(text(referenced_sql(tables))).yield_per(1000):
            indexed.add(key)
            report.checked += 1
            report.checked_instances += is_instance_key(key)
            info = store.head(key)
            if info is None:
                report.missing.append(key)
            elif info.size != size:
                report.wrong_size.append(f"{key}: {info.size} bytes, index says {size}")
            elif deep and _hash(archive, key) != sha:
                report.wrong_hash.append(key)
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
                if not is_referenced(conn, key, tables):
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
