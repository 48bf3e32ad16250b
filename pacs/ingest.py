"""The one ingest path: every entry point (C-STORE, STOW-RS, import, AI results) stores through here.

Order of work for one instance: parse the header (pixel data is never decoded), validate, hash,
write the object durably, then commit index rows + an outbox row in one transaction. A crash at
any point leaves at worst an object without an index row (``cloudfilm fsck --repair`` removes it),
never an index row without its object; a refused instance leaves nothing.

Two sends of one SOP Instance UID are the same instance when their data sets (the bytes after the
File Meta Information) are the same, whichever route and calling AE they came by: the File Meta
Information says who wrote the file (Source AE Title, Implementation Class UID), not what it holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, cast

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, OperationalError, SQLAlchemyError

from pacs import metrics
from pacs.dicomfile import ParsedInstance, bare_dataset_identity, dataset_offset, parse_part10
from pacs.errors import CloudfilmError, InvalidDataset, NotDicom, StorageUnavailable
from pacs.index.records import Identity, InstanceRecord, build_record, identity_of
from pacs.index.writer import (
    CommitOutcome,
    CommitStatus,
    ExistingInstance,
    commit_batch,
    find_existing,
    prepare_statements,
    record_dataset_digest,
)
from pacs.partitions import DEFAULT_PARTITION, Partition, default_partition
from pacs.rejection import KEY_OBJECT_SELECTION, RejectionNote, rejection_note, withhold
from pacs.storage import ObjectStore, StagedObject, instance_key

log = logging.getLogger(__name__)
_CHUNK = 1024 * 1024
_IN_MEMORY_LIMIT = 64 * 1024 * 1024
#: Hashing runs beside the parsing (hashlib releases the GIL): the caller's thread parses the
#: header meanwhile, instead of hashing first (~0.3 ms per 512 KiB CT slice off its path).
_HASHERS = ThreadPoolExecutor(8, thread_name_prefix="ingest-hash")


#: Builds the preamble and File Meta Information for a data set that has none, from its SOP Class
#: UID, SOP Instance UID and transfer syntax (PS3.10 7.1).
FileMetaBuilder = Callable[[str, str, str], bytes]


class Outcome(StrEnum):
    """What happened to one submitted instance; each entry point maps it to its own status."""

    STORED = "stored"  # new instance, durable
    REPLACED = "replaced"  # same SOPInstanceUID, another data set, overwritten (CLOUDFILM_OVERWRITE=true)
    DUPLICATE = "duplicate"  # same SOPInstanceUID, same data set: nothing changed
    KEPT_EXISTING = "kept-existing"  # same SOPInstanceUID, another data set: stored one kept (warning)
    INVALID = "invalid"  # parsable, but required attributes missing or malformed
    NOT_DICOM = "not-dicom"  # cannot be parsed
    UNAVAILABLE = "unavailable"  # object store or database failed: retry later


@dataclass(frozen=True, slots=True)
class StagedRewrite:
    """A rewritten instance whose object is stored under ``key`` but not yet indexed."""

    record: InstanceRecord
    key: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcome: Outcome
    reason: str = ""
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    size: int = 0

    @property
    def ok(self) -> bool:
        """The instance is in the archive (stored now or before, possibly as an earlier version)."""
        return self.outcome in (Outcome.STORED, Outcome.REPLACED, Outcome.DUPLICATE, Outcome.KEPT_EXISTING)

    @property
    def warning(self) -> bool:
        return self.outcome is Outcome.KEPT_EXISTING


_Parsed = tuple[ParsedInstance, Identity, tuple[str, str] | None] | IngestResult


class Part10Source:
    """A Part 10 object to ingest: bytes in memory, a file, or a file-meta prefix + dataset file."""

    def __init__(self, opener: Callable[[], BinaryIO], size: int, label: str) -> None:
        self._opener = opener
        self.size = size
        self.label = label

    @classmethod
    def from_bytes(cls, data: bytes, label: str = "<bytes>") -> Part10Source:
        return cls(lambda: io.BytesIO(data), len(data), label)

    @classmethod
    def from_path(cls, path: Path) -> Part10Source:
        return cls(lambda: open(path, "rb"), path.stat().st_size, str(path))

    @classmethod
    def from_prefixed_file(
        cls, prefix: bytes, path: Path, label: str = "<dataset>", *, offset: int = 0
    ) -> Part10Source:
        """``prefix`` (preamble + file meta) followed by the bytes of ``path`` from ``offset`` on."""
        size = len(prefix) + path.stat().st_size - offset
        return cls(lambda: cast(BinaryIO, _ChainReader(prefix, path, offset)), size, label)

    def open(self) -> BinaryIO:
        return self._opener()

    def read_all(self) -> bytes:
        with self.open() as fh:
            return fh.read()


class _ChainReader(io.RawIOBase):
    """A seekable reader over ``prefix`` bytes followed by ``path`` from ``offset`` on."""

    def __init__(self, prefix: bytes, path: Path, offset: int = 0) -> None:
        self._prefix = prefix
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._offset = offset
        self._size = len(prefix) + os.fstat(self._fh.fileno()).st_size - offset
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = len(view)
        done = 0
        head = len(self._prefix)
        if self._pos < head and want:
            chunk = self._prefix[self._pos : self._pos + want]
            view[: len(chunk)] = chunk
            done = len(chunk)
            self._pos += done
        if done < want and self._pos >= head:
            self._fh.seek(self._offset + self._pos - head)
            got = self._fh.readinto(view[done:]) or 0
            self._pos += got
            done += got
        return done

    def readall(self) -> bytes:
        """The rest in one read of the file (ingest reads small objects whole)."""
        head = len(self._prefix)
        start = self._prefix[self._pos :] if self._pos < head else b""
        self._fh.seek(self._offset + max(0, self._pos - head))
        rest = self._fh.read()
        self._pos = self._size
        return start + rest

    def close(self) -> None:
        self._fh.close()
        super().close()


@dataclass(slots=True)
class _Pending:
    record: InstanceRecord
    stored: Future[None]  # the object, durable under ``record.object_key`` once done
    future: Future[CommitOutcome]


class _GroupCommitter:
    """Index writes committed in batches by the waiting callers themselves (group commit).

    A caller queues its record, then takes the writer's lock and commits everything queued so far,
    its own record included; callers that queue meanwhile wait for the lock and find theirs
    committed by the one before them, or commit the next batch. One association storing alone
    commits on its own thread (no hand-off to a writer thread and back: ~0.4 ms per instance);
    concurrent ones, and a bulk import, share commits.
    """

    def __init__(self, engine: Engine, max_batch: int = 64) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: deque[_Pending] = deque()
        self._writer = threading.Lock()

    def submit(self, record: InstanceRecord, stored: Future[None]) -> Future[CommitOutcome]:
        """Queue ``record``; it is committed only once its object is durable (``stored``)."""
        fut: Future[CommitOutcome] = Future()
        self._queue.append(_Pending(record, stored, fut))
        return fut

    def wait(self, fut: Future[CommitOutcome]) -> CommitOutcome:
        """The outcome of a submitted record, committing queued records until it is known."""
        while not fut.done():
            with self._writer:
                if fut.done():
                    break
                batch: list[_Pending] = []
                while self._queue and len(batch) < self._max_batch:
                    batch.append(self._queue.popleft())
                if batch:
                    self._commit(batch)
        return fut.result()

    def _commit(self, batch: list[_Pending]) -> None:
        def objects_durable() -> None:  # the index never names an object that is not on disk
            for p in batch:
                p.stored.result()

        try:
            outcomes = commit_batch(self._engine, [p.record for p in batch], before_commit=objects_durable)
        except CloudfilmError as exc:  # an object could not be stored: the batch was rolled back
            if len(batch) > 1:
                for p in batch:
                    self._commit([p])
                return
            batch[0].future.set_exception(exc)
            return
        except (DataError, ValueError, UnicodeError) as exc:  # a value the database cannot hold
            if len(batch) > 1:
                for p in batch:
                    self._commit([p])
                return
            log.warning("the index refused %s: %s", batch[0].record.sop_uid, exc)
            batch[0].future.set_exception(InvalidDataset("the index cannot hold a value of this instance"))
            return
        except (OperationalError, DBAPIError) as exc:
            if len(batch) > 1 and not isinstance(exc, OperationalError):
                for p in batch:  # isolate the instance that broke the batch
                    self._commit([p])
                return
            log.error("index commit failed: %s", exc)
            err = StorageUnavailable("the index database is unavailable")
            for p in batch:
                p.future.set_exception(err)
            return
        except SQLAlchemyError as exc:
            if len(batch) > 1:
                for p in batch:
                    self._commit([p])
                return
            log.exception("index commit failed")
            batch[0].future.set_exception(StorageUnavailable(f"the index rejected the instance: {type(exc).__name__}"))
            return
        except Exception as exc:  # never leave a caller waiting forever
            log.exception("index commit failed")
            for p in batch:
                p.future.set_exception(exc)
            return
        for p, outcome in zip(batch, outcomes, strict=True):
            p.future.set_result(outcome)


_SAME = "the same instance is already stored"
_OTHER_STUDY = "an instance with this SOPInstanceUID is stored in another study; kept"
_DIFFERENT = "an instance with this SOPInstanceUID and a different data set is already stored; kept"


@dataclass(frozen=True, slots=True)
class _Prepared:
    """An instance whose object is being stored and whose index commit is queued."""

    ident: Identity
    key: str
    size: int
    stored: Future[None]
    commit: Future[CommitOutcome]
    rejection: RejectionNote | None = None  # an IOCM rejection note: applied once the note is stored
    partition: int = DEFAULT_PARTITION


@dataclass(frozen=True, slots=True)
class _Checked:
    """An instance that passed the checks, not yet stored."""

    ident: Identity
    parsed: ParsedInstance
    sha256: str
    dataset_sha256: str
    replace: bool  # it replaces the stored instance of the same SOPInstanceUID (overwrite policy)


DEFAULT = default_partition()


def _result_for(ident: Identity, size: int, outcome: Outcome, reason: str = "") -> IngestResult:
    return IngestResult(outcome, reason, ident.sop_uid, ident.sop_class_uid, ident.study_uid, ident.series_uid, size)


class IngestService:
    """Store DICOM instances durably and index them; safe to call from many threads."""

    def __init__(self, engine: Engine, store: ObjectStore, *, overwrite: bool = False,
                 accept_short_pixel_data: bool = False, rejection_grace: float = 30 * 86400.0) -> None:
        self.engine = engine
        self.rejection_grace = rejection_grace
        self.store = store
        self.overwrite = overwrite
        self.accept_short_pixel_data = accept_short_pixel_data
        self._committer = _GroupCommitter(engine)
        prepare_statements(engine)

    # Entry points ----------------------------------------------------------------------------

    def store_bytes(self, data: bytes, label: str = "<bytes>", partition: Partition = DEFAULT) -> IngestResult:
        return self.store_source(Part10Source.from_bytes(data, label), partition)

    def store_file(self, path: Path) -> IngestResult:
        try:
            source = Part10Source.from_path(path)
        except OSError as exc:
            return IngestResult(Outcome.NOT_DICOM, f"cannot read {path}: {exc.strerror}")
        return self.store_source(source)

    def store_source(self, source: Part10Source, partition: Partition = DEFAULT) -> IngestResult:
        """Store one instance into ``partition``; returns once it is durable and indexed (or rejected)."""
        started = time.perf_counter()
        step = self._prepare(source, partition)
        result = step if isinstance(step, IngestResult) else self._finish(step)
        return self._observed(source.label, result, started)

    def store_files(self, paths: Iterable[Path], *, jobs: int = 4, window: int = 256,
                    file_meta: FileMetaBuilder | None = None) -> Iterator[IngestResult]:
        """Store many files, in order of ``paths``, pipelined: readers prepare and write objects while
        earlier instances wait for the index, so commits are grouped into large batches.

        With ``file_meta``, a file that holds a data set without File Meta Information is stored
        behind the meta it builds (as DCMTK's tools do); without, such a file is refused."""
        pending: deque[tuple[Path, float, Future[tuple[Part10Source | None, _Prepared | IngestResult]]]] = deque()
        with ThreadPoolExecutor(jobs, thread_name_prefix="ingest") as pool:
            for path in paths:
                pending.append((path, time.perf_counter(), pool.submit(self._prepare_file, path, file_meta)))
                while len(pending) >= window:
                    yield self._drain_one(pending)
            while pending:
                yield self._drain_one(pending)

    def _prepare_file(self, path: Path,
                      file_meta: FileMetaBuilder | None) -> tuple[Part10Source | None, _Prepared | IngestResult]:
        try:
            source = Part10Source.from_path(path)
            if file_meta is not None:
                source = _with_file_meta(source, path, file_meta)
        except OSError as exc:
            return None, IngestResult(Outcome.NOT_DICOM, f"cannot read {path}: {exc.strerror or exc}")
        except (NotDicom, InvalidDataset) as exc:
            outcome = Outcome.NOT_DICOM if isinstance(exc, NotDicom) else Outcome.INVALID
            return None, IngestResult(outcome, str(exc), size=source.size)
        return source, self._prepare(source)

    def _drain_one(
        self, pending: deque[tuple[Path, float, Future[tuple[Part10Source | None, _Prepared | IngestResult]]]]
    ) -> IngestResult:
        path, started, fut = pending.popleft()
        source, step = fut.result()
        result = step if isinstance(step, IngestResult) else self._finish(step)
        return self._observed(source.label if source is not None else str(path), result, started)

    def _observed(self, label: str, result: IngestResult, started: float) -> IngestResult:
        metrics.observe_ingest(result.outcome.value, result.size, time.perf_counter() - started)
        if not result.ok:
            log.info("rejected %s: %s", label, result.reason)
        return result

    def stage_rewrite(self, data: bytes, label: str, partition: Partition = DEFAULT) -> StagedRewrite:
        """Parse, validate and hash a rewritten version of a stored instance of ``partition``, store its
        object under its own key and build its index record, without committing it: the caller
        (:mod:`pacs.corrections`) commits the records of one whole change in one transaction, or deletes
        the objects. Raises InvalidDataset (NotDicom included) or StorageUnavailable."""
        source = Part10Source.from_bytes(data, label)
        step = self._parse(source, data, None)
        if isinstance(step, IngestResult):
            raise NotDicom(step.reason) if step.outcome is Outcome.NOT_DICOM else InvalidDataset(step.reason)
        parsed, ident, digests = step
        assert digests is not None
        if parsed.pixel_problem and not self.accept_short_pixel_data:
            raise InvalidDataset(parsed.pixel_problem)
        sha, dataset_sha = digests
        key = partition.key_prefix + instance_key(ident.study_uid, ident.series_uid, ident.sop_uid, sha)
        record = build_record(parsed, ident, object_key=key, size=len(data), sha256=sha, dataset_sha256=dataset_sha)
        record.partition = partition.id
        self.store.put_bytes(key, data)
        return StagedRewrite(record, key)

    # The path itself ---------------------------------------------------------------------------

    def _prepare(self, source: Part10Source, partition: Partition = DEFAULT) -> _Prepared | IngestResult:
        """Parse, validate and hash; store the object and queue the index commit.

        Small objects (nearly all) are read once into memory: parsing from a buffer avoids a syscall
        per element, and the same bytes are hashed (on a pool thread) and staged in the object store, which writes
        them while the header is parsed and checked (the filesystem syncs a temp file meanwhile).
        The object gets its name only once the instance is accepted, while its index record is
        built; the record is committed once the object is durable.
        """
        try:
            data = source.read_all() if source.size <= _IN_MEMORY_LIMIT else None
        except OSError as exc:
            return IngestResult(Outcome.NOT_DICOM, f"cannot read the data: {exc}", size=source.size)
        staged: StagedObject | None = None
        digest = _HASHERS.submit(_digests, data) if data is not None else None
        if data is not None:
            with contextlib.suppress(CloudfilmError):  # written again below, once the instance is known
                staged = self.store.stage_bytes(data)
        try:
            checked = self._check(source, data, digest, partition.id)
        except BaseException:
            if staged is not None:
                staged.discard()
            raise
        if isinstance(checked, IngestResult):
            if staged is not None:
                staged.discard()  # a refusal leaves nothing behind
            return checked
        ident = checked.ident

        def result(outcome: Outcome, reason: str) -> IngestResult:
            return _result_for(ident, source.size, outcome, reason)

        key = partition.key_prefix + instance_key(ident.study_uid, ident.series_uid, ident.sop_uid, checked.sha256)
        try:
            stored = self._store_object(source, data, staged, key)
        except CloudfilmError as exc:
            return result(Outcome.UNAVAILABLE, str(exc))
        except OSError as exc:
            return result(Outcome.UNAVAILABLE, f"cannot read the data: {exc}")
        try:
            record = build_record(checked.parsed, ident, object_key=key, size=source.size, sha256=checked.sha256,
                                  dataset_sha256=checked.dataset_sha256)
        except Exception as exc:  # pydicom's conversions raise many kinds on damaged values
            self._forget_object(key, stored)
            log.warning("cannot index %s: %s", source.label, exc, exc_info=True)
            return result(Outcome.INVALID, f"an attribute cannot be decoded: {exc}")
        record.replace = checked.replace
        record.partition = partition.id
        note = rejection_note(checked.parsed.dataset) if ident.sop_class_uid == KEY_OBJECT_SELECTION else None
        return _Prepared(ident, key, source.size, stored, self._committer.submit(record, stored), note, partition.id)

    def _store_object(self, source: Part10Source, data: bytes | None, staged: StagedObject | None,
                      key: str) -> Future[None]:
        """Start storing the object under ``key``: done (or failed) once it is durable."""
        if staged is not None:
            return staged.publish(key)
        if data is not None:
            self.store.put_bytes(key, data)
        else:
            with source.open() as fh:
                self.store.put_stream(key, fh, source.size)
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def _parse(self, source: Part10Source, data: bytes | None, digest: Future[tuple[str, str]] | None) -> _Parsed:
        """Parse the header and validate the UIDs; the digests too when there is no ``digest`` under way."""
        try:
            with io.BytesIO(data) if data is not None else source.open() as fh:
                parsed = parse_part10(fh, source.size)
                try:
                    ident = identity_of(parsed.dataset)
                except InvalidDataset as exc:
                    if parsed.partial_tail:  # what is missing may have been cut off
                        raise NotDicom(f"{exc}: the file ends inside an element header (truncated?)") from exc
                    raise
                digests = None
                if digest is None:
                    fh.seek(0)
                    digests = _stream_digests(fh)
        except NotDicom as exc:
            return IngestResult(Outcome.NOT_DICOM, str(exc), size=source.size)
        except InvalidDataset as exc:
            return IngestResult(Outcome.INVALID, str(exc), size=source.size)
        except OSError as exc:
            return IngestResult(Outcome.NOT_DICOM, f"cannot read the data: {exc}", size=source.size)
        return parsed, ident, digests

    def _check(self, source: Part10Source, data: bytes | None,
               digest: Future[tuple[str, str]] | None, partition: int = DEFAULT_PARTITION) -> _Checked | IngestResult:
        """Parse, validate and hash, and apply the duplicate policy: what to store, or why not."""
        step = self._parse(source, data, digest)
        if isinstance(step, IngestResult):
            return step
        parsed, ident, digests = step

        def result(outcome: Outcome, reason: str = "") -> IngestResult:
            return _result_for(ident, source.size, outcome, reason)

        if parsed.pixel_problem and not self.accept_short_pixel_data:
            return result(Outcome.INVALID, parsed.pixel_problem)
        try:
            existing = find_existing(self.engine, ident.sop_uid, partition)
        except SQLAlchemyError:
            log.exception("index lookup failed")
            return result(Outcome.UNAVAILABLE, "the index database is unavailable")
        if digests is None:
            assert digest is not None
            digests = digest.result()
        sha, dataset_sha = digests
        if existing is not None:
            try:
                same = existing.sha256 == sha or self._stored_dataset_digest(existing, ident.sop_uid) == dataset_sha
            except CloudfilmError as exc:
                return result(Outcome.UNAVAILABLE, str(exc))
            if same:
                return result(Outcome.DUPLICATE, _SAME)
            if existing.study_uid != ident.study_uid:
                return result(Outcome.KEPT_EXISTING, _OTHER_STUDY)
            if not self.overwrite:
                return result(Outcome.KEPT_EXISTING, _DIFFERENT)
        return _Checked(ident, parsed, sha, dataset_sha, replace=existing is not None)

    def _stored_dataset_digest(self, existing: ExistingInstance, sop_uid: str) -> str:
        """The data set digest of a stored instance; read from its object (once, then recorded) for
        rows indexed before the digest was (revision 0005)."""
        if existing.dataset_sha256 is not None:
            return existing.dataset_sha256
        with self.store.open(existing.object_key) as fh:
            digest = _stream_digests(fh)[1]
        try:
            record_dataset_digest(self.engine, sop_uid, existing.object_key, digest)
        except SQLAlchemyError:
            log.warning("could not record the data set digest of %s", sop_uid, exc_info=True)
        return digest

    def _finish(self, prepared: _Prepared) -> IngestResult:
        """Wait for the index commit and turn its outcome into the caller's result."""
        ident, key = prepared.ident, prepared.key

        def result(outcome: Outcome, reason: str = "") -> IngestResult:
            return _result_for(ident, prepared.size, outcome, reason)

        try:
            outcome = self._committer.wait(prepared.commit)
        except InvalidDataset as exc:
            self._forget_object(key, prepared.stored)  # a refused instance leaves nothing behind
            return result(Outcome.INVALID, str(exc))
        except CloudfilmError as exc:
            # The object is (or is being) stored but unindexed: remove it now, or fsck --repair will.
            self._forget_object(key, prepared.stored)
            return result(Outcome.UNAVAILABLE, str(exc))
        except BaseException:
            self._forget_object(key, prepared.stored)
            raise
        if prepared.rejection is not None and outcome.status in (
                CommitStatus.INSERTED, CommitStatus.REPLACED, CommitStatus.EXISTS_SAME):
            try:  # before the sender hears the note is stored: what it rejects is hidden by then
                withhold(self.engine, prepared.rejection, self.rejection_grace, prepared.partition)
            except SQLAlchemyError:
                log.exception("the rejection note %s could not be applied", ident.sop_uid)
                return result(Outcome.UNAVAILABLE, "the rejection could not be applied; send the note again")
        if outcome.status is CommitStatus.INSERTED:
            return result(Outcome.STORED)
        if outcome.status is CommitStatus.REPLACED:
            if outcome.previous_key and outcome.previous_key != key:
                self._forget_object(outcome.previous_key)
            return result(Outcome.REPLACED, "an earlier version of this instance was replaced")
        if outcome.status is CommitStatus.EXISTS_SAME:
            if outcome.kept_key != key:  # the same data set behind other File Meta Information
                self._forget_object(key, prepared.stored)
            return result(Outcome.DUPLICATE, _SAME)
        if outcome.status is CommitStatus.SERIES_IN_OTHER_STUDY:
            self._forget_object(key)
            return result(Outcome.INVALID, f"SeriesInstanceUID {ident.series_uid} already belongs to another study")
        # A concurrent writer stored other bytes under this SOPInstanceUID first.
        self._forget_object(key)
        return result(Outcome.KEPT_EXISTING, _DIFFERENT)

    def _forget_object(self, key: str, stored: Future[None] | None = None) -> None:
        """Delete the unindexed object ``key`` (once its write, ``stored``, has ended)."""
        if stored is not None:
            with contextlib.suppress(Exception):
                stored.result()
        try:
            self.store.delete(key)
        except CloudfilmError:
            log.warning("could not delete unindexed object %s; fsck --repair will", key)


def _digests(data: bytes) -> tuple[str, str]:
    """SHA-256 of the object and of its data set (the bytes after the File Meta Information)."""
    offset = dataset_offset(data)
    return hashlib.sha256(data).hexdigest(), hashlib.sha256(memoryview(data)[offset:]).hexdigest()


def _stream_digests(fh: BinaryIO) -> tuple[str, str]:
    """:func:`_digests` of a stream, read once."""
    whole, dataset = hashlib.sha256(), hashlib.sha256()
    head = fh.read(_CHUNK)
    offset = dataset_offset(head)
    whole.update(head)
    dataset.update(memoryview(head)[offset:])
    while chunk := fh.read(_CHUNK):
        whole.update(chunk)
        dataset.update(chunk)
    return whole.hexdigest(), dataset.hexdigest()


def _with_file_meta(source: Part10Source, path: Path, file_meta: FileMetaBuilder) -> Part10Source:
    """``source`` as it is when it is a Part 10 file; a data set without File Meta Information
    behind the meta ``file_meta`` builds for it. Raises NotDicom or InvalidDataset with the reason."""
    with source.open() as fh:
        head = fh.read(132)
        if head[128:132] == b"DICM" or head.startswith(b"\x02\x00"):
            return source
        fh.seek(0)
        sop_class, sop_instance, ts = bare_dataset_identity(fh, source.size)
    try:
        meta = file_meta(sop_class, sop_instance, ts)
    except ValueError as exc:
        raise InvalidDataset(f"no File Meta Information can be built for this data set: {exc}") from exc
    return Part10Source.from_prefixed_file(meta, path, source.label)

