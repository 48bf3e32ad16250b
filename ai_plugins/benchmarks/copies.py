"""De-identified copies of benchmark studies, stored in the archive as studies of their own.

``dev`` copies are the dev split as vendors see it over DICOMweb (their UIDs are in every vendor's
scope). ``eval`` copies of test cases were once read by vendor-hosted plugins during evaluations;
none is made any more (a test case never leaves), and those that exist stay hidden from everyone
but admins (:mod:`ai_plugins.benchmarks.visibility`). Each benchmark and kind has its own
de-identification namespace, so UIDs, pseudonyms and date shifts are consistent within it and
unrelated across them. Copies are pinned stable at once, so the router never sends them to a
plugin on its own (for test cases that would show them to every hosted plugin).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ai_plugins.benchmarks.models import BenchmarkCopyRow
from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.accounts.keys import secret_key
from pacs.archive import Archive
from pacs.deid import Deidentifier, deidentify_part10
from pacs.errors import CloudfilmError, NotFound, StorageUnavailable
from pacs.index.db import utcnow
from pacs.index.models import Study
from pacs.jobs import write_transaction
from pacs.retrieve import StoredInstance, find_instances, open_instance
from pacs.stability import StudyStability

log = logging.getLogger(__name__)

_WRITERS = 4
PINNED = datetime(9999, 12, 31, tzinfo=UTC)  # a copy's "last arrival covered": never a stable candidate


@dataclass(frozen=True, slots=True)
class CopyInfo:
    source_study_uid: str
    copy_study_uid: str
    n_instances: int


def deidentifier(archive: Archive, benchmark_id: int, purpose: str) -> Deidentifier:
    """The de-identification of one benchmark's ``dev`` or ``eval`` copies."""
    return Deidentifier(secret_key(archive.settings), f"cloudfilm-benchmark/{benchmark_id}/{purpose}")


def existing_copies(engine: Engine, benchmark_id: int, purpose: str) -> dict[str, str]:
    """``{source study UID: copy study UID}`` of the copies made so far."""
    with engine.connect() as conn:
        rows = conn.execute(select(BenchmarkCopyRow.source_study_uid, BenchmarkCopyRow.copy_study_uid)
                            .where(BenchmarkCopyRow.benchmark_fk == benchmark_id,
                                   BenchmarkCopyRow.purpose == purpose))  # fmt: skip
        return {s: c for s, c in rows}


def _pin(archive: Archive, study_uid: str, partition: int) -> None:
    with write_transaction(archive.engine) as conn:
        study_id = conn.execute(select(Study.id).where(  # the copy lies in its benchmark's partition
            Study.study_uid == study_uid, Study.partition_fk == partition)).scalar_one()
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        now = utcnow()
        conn.execute(dialect.insert(StudyStability).values(study_fk=study_id, generation=1, last_instance_at=PINNED,
                                                            stable_at=now)
                     .on_conflict_do_update(index_elements=["study_fk"],
                                            set_={"last_instance_at": PINNED}))  # fmt: skip


def ensure_copy(archive: Archive, benchmark_id: int, purpose: str, source_uid: str,
                partition: int = DEFAULT_PARTITION) -> CopyInfo:  # fmt: skip
    """The de-identified copy of ``partition``'s study ``source_uid``, stored into the same partition (made
    now if missing; making it again is harmless)."""
    target = archive.partitions.by_id(partition)
    if target is None:
        raise NotFound(f"partition {partition} is not configured")
    deid = deidentifier(archive, benchmark_id, purpose)
    copy_uid = deid.uid(source_uid)
    with write_transaction(archive.engine) as conn:
        row = conn.execute(select(BenchmarkCopyRow).where(BenchmarkCopyRow.copy_study_uid == copy_uid)).first()
        if row is None:  # recorded before any instance lands, so the copy is never visible unhidden
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            conn.execute(dialect.insert(BenchmarkCopyRow).values(
                benchmark_fk=benchmark_id, purpose=purpose, source_study_uid=source_uid, copy_study_uid=copy_uid,
                n_instances=0, created_at=utcnow())
                .on_conflict_do_nothing(index_elements=["copy_study_uid"]))  # fmt: skip
        elif row.n_instances > 0:
            return CopyInfo(source_uid, copy_uid, row.n_instances)
    instances = find_instances(archive.engine, AccessScope.studies(source_uid, partition=partition),
                               study_uid=source_uid)  # fmt: skip

    def store(instance: StoredInstance) -> None:
        with open_instance(archive.store, instance) as fh:
            data, _ = deidentify_part10(fh.read(), deid)
        result = archive.ingest.store_bytes(data, label=f"de-identified copy of {instance.sop_uid}", partition=target)
        if not result.ok:
            raise StorageUnavailable(f"the de-identified copy of study {source_uid} was not stored: {result.reason}")

    store(instances[0])
    _pin(archive, copy_uid, partition)  # the study row exists now; from here on the router never picks it up
    with ThreadPoolExecutor(_WRITERS, thread_name_prefix="deid") as pool:
        list(pool.map(store, instances[1:]))
    stored = len(instances)
    with write_transaction(archive.engine) as conn:
        conn.execute(update(BenchmarkCopyRow).where(BenchmarkCopyRow.copy_study_uid == copy_uid)
                     .values(n_instances=stored))  # fmt: skip
    return CopyInfo(source_uid, copy_uid, stored)


def publish(archive: Archive, benchmark_id: int, source_uids: Sequence[str],
            progress: Callable[[int, int], None] | None = None,
            partition: int = DEFAULT_PARTITION) -> tuple[list[CopyInfo], list[str]]:  # fmt: skip
    """Dev copies of ``source_uids``; the studies that could not be de-identified, each with its reason."""
    done: list[CopyInfo] = []
    failed: list[str] = []
    for n, uid in enumerate(source_uids, start=1):
        try:
            done.append(ensure_copy(archive, benchmark_id, "dev", uid, partition))
        except CloudfilmError as exc:
            log.warning("dev copy of study %s failed: %s", uid, exc)
            failed.append(f"study {uid}: {exc}")
        if progress is not None:
            progress(n, len(source_uids))
    return done, failed
