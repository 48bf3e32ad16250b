"""The object store interface: every instance is one immutable object, addressed by a key.

Backends: :mod:`pacs.storage.filesystem` (default) and :mod:`pacs.storage.s3` (MinIO, AWS S3,
SeaweedFS, ... through the ``minio`` SDK). A ``put_*`` returns only once the object is durable.
Backend failures surface as :class:`~pacs.errors.StorageUnavailable`; a missing key as
:class:`~pacs.errors.NotFound`.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pacs import metrics

#: Where :meth:`ObjectStore.probe_write` writes: no instance key starts with ``_`` (keys start with a UID).
PROBE_KEY = "_probe/readiness"
# The calls observed in every backend, by the operation name the metrics give them.
_OBSERVED = {"put_stream": "put", "open": "get", "get_range": "get_range", "read_into": "get_range", "head": "head",
             "delete": "delete"}

class StagedObject(ABC):
    """Bytes made ready to be stored before their key is known (see :meth:`ObjectStore.stage_bytes`)."""

    @abstractmethod
    def publish(self, key: str) -> Future[None]:
        """Start storing the staged bytes under ``key``; the future resolves once they are durable
        there (or fails with StorageUnavailable). Call at most once."""

    @abstractmethod
    def discard(self) -> None:
        """Drop the staged bytes (the instance was refused); never raises."""


class _BufferedStage(StagedObject):
    """The default: the bytes stay in memory and are written by :meth:`publish`."""

    def __init__(self, store: ObjectStore, data: bytes) -> None:
        self._store = store
        self._data = data

    def publish(self, key: str) -> Future[None]:
        done: Future[None] = Future()
        try:
            self._store.put_bytes(key, self._data)
        except Exception as exc:  # noqa: BLE001 - delivered through the future, as by every store
            done.set_exception(exc)
        else:
            done.set_result(None)
        return done

    def discard(self) -> None:
        self._data = b""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: float | None = field(default=None, compare=False)  # POSIX time of the last write, if known


class ObjectStore(ABC):
    """A flat namespace of immutable byte objects."""

    url: str
    read_concurrency: int = 4
    """Reads worth running at once for one retrieve: a few for a disk, more where each read waits on
    the network (see :mod:`pacs.storage.readahead`)."""

    def __init_subclass__(cls, observed: bool = True, **kwargs: Any) -> None:
        """Every backend's calls are observed (latency, failures): ``cloudfilm_object_store_*``; a
        store that only hands calls on to backends (``observed=False``) is not counted twice."""
        super().__init_subclass__(**kwargs)
        for name, op in _OBSERVED.items() if observed else ():
            method = cls.__dict__.get(name)
            if method is not None:
                setattr(cls, name, metrics.timed_store_call(op, method))

    @abstractmethod
    def put_stream(self, key: str, stream: BinaryIO, size: int | None = None) -> None:
        """Store everything read from ``stream`` under ``key``; durable when this returns."""

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path`` under ``key``; durable when this returns."""
        with open(path, "rb") as fh:
            self.put_stream(key, fh, path.stat().st_size)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put_stream(key, io.BytesIO(data), len(data))

    def stage_bytes(self, data: bytes) -> StagedObject:
        """Get ``data`` ready to be stored under a key chosen later, by :meth:`StagedObject.publish`.

        Returns at once: a caller stages first, then parses and validates while the store works.
        Nothing is visible under any key until it is published. The default keeps ``data`` in
        memory until then; the filesystem writes it to a temp file now and syncs it meanwhile.
        """
        return _BufferedStage(self, data)

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable stream of the whole object; the caller closes it."""

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    @abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes starting at ``offset`` (one ranged read)."""

    def read_into(self, key: str, offset: int, buffer: memoryview) -> int:
        """Fill ``buffer`` with the object's bytes from ``offset`` (one ranged read); returns how many
        were read, fewer than ``len(buffer)`` only where the object ends."""
        data = self.get_range(key, offset, len(buffer))
        buffer[: len(data)] = data
        return len(data)

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size of the object, or None when it does not exist."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``."""

    @abstractmethod
    def ping(self) -> None:
        """Raise StorageUnavailable unless the store is reachable and usable."""

    def cleanup_temp(self, older_than_s: float, *, remove: bool = True) -> tuple[str, ...]:
        """What writes cut off by a crash left in the store (staged data never published), older than
        ``older_than_s`` seconds; removed unless ``remove`` is false. The default stages nothing."""
        return ()

    def probe_write(self) -> None:
        """Raise StorageUnavailable unless the store takes a write now (readiness, ``/readyz``).

        Cheap enough to run every few seconds: one small object under :data:`PROBE_KEY`, written
        and deleted (a full disk, a read-only bucket or a bucket policy refusing writes all fail it,
        where a read or a listing would still succeed). Concurrent probes share the key: an
        overwrite or a delete of a deleted key is harmless.
        """
        self.ping()
        self.put_bytes(PROBE_KEY, b"cloudfilm readiness probe\n")
        self.delete(PROBE_KEY)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default holds none."""
