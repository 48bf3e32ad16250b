"""Local filesystem object store: temp file, fsync, atomic rename, fsync of the directory."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from pacs.errors import NotFound, StorageUnavailable
from pacs.storage.base import ObjectInfo, ObjectStore, StagedObject
from pacs.storage.keys import check_key

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_MIB = 1024 * 1024

#: Free space below which the store is not ready for writes: room for the largest instances
#: (multi-frame mammography, enhanced CT/MR, whole-slide levels) arriving at once.
MIN_FREE_BYTES = 64 * _MIB


#: Threads that sync and name staged objects (the GIL is released while they wait on the disk);
#: each holds one staged object from its write until its caller publishes or discards it.
_SYNCERS = ThreadPoolExecutor(32, thread_name_prefix="object-sync")


class _StagedFile(StagedObject):
    """A temp file in the store's ``.tmp``, written by :meth:`FilesystemStore.stage_bytes`.

    One background job syncs it, waits for its key, then renames it into place and syncs the
    directory; the caller parses and checks meanwhile, and later builds its index record while
    the rename and the directory sync run.
    """

    def __init__(self, store: FilesystemStore, tmp_name: str, fd: int) -> None:
        self._store = store
        self._tmp_name = tmp_name
        self._key: str | None = None
        self._decided = threading.Event()  # published (``_key`` set) or discarded
        self._done = _SYNCERS.submit(self._sync_then_name, fd)

    def _sync_then_name(self, fd: int) -> None:
        try:
            try:
                os.fdatasync(fd)  # data and the size needed to read it back
            finally:
                os.close(fd)
            self._decided.wait()
            if self._key is not None:
                self._store._name(self._tmp_name, self._key)
        except OSError as exc:
            self.discard()
            raise StorageUnavailable(f"cannot write to the object store: {exc.strerror or exc}") from exc

    def publish(self, key: str) -> Future[None]:
        try:
            self._store._path(key)  # a bad key is refused at once
        except BaseException:
            self.discard()
            raise
        self._key = key
        self._decided.set()
        return self._done

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._tmp_name)  # at once; the job, if still syncing, then names nothing
        self._decided.set()


class FilesystemStore(ObjectStore):
    """Objects as files under ``root``; keys map to relative paths and can never leave ``root``."""

    def __init__(self, root: Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
        self.root = root.resolve()
        self.url = f"file://{self.root}"
        self.min_free_bytes = min_free_bytes
        self._tmp = self.root / ".tmp"
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create the object store at {self.root}: {exc.strerror}") from exc

    def _path(self, key: str) -> Path:
        # check_key admits only [A-Za-z0-9_-.] segments joined by "/", never "..": the joined path
        # cannot leave the root (the root and everything under it is the archive's own).
        return self.root / check_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(key, lambda out: out.write(data))

    def put_stream(self, key: str, stream: BinaryIO, size: int | None = None) -> None:
        self._atomic_write(key, lambda out: shutil.copyfileobj(stream, out, _CHUNK))

    def stage_bytes(self, data: bytes) -> StagedObject:
        """Write ``data`` to a temp file now and sync it on a background thread.

        The write goes to the page cache (fast); the fdatasync (~0.7 ms for a 512 KiB CT slice)
        overlaps the caller's parsing and checks instead of preceding them.
        """
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        except OSError as exc:
            raise StorageUnavailable(f"cannot write to the object store: {exc.strerror or exc}") from exc
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise StorageUnavailable(f"cannot write to the object store: {exc.strerror or exc}") from exc
        return _StagedFile(self, tmp_name, fd)

    def _atomic_write(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        """Temp file, fsync, atomic rename, fsync of the directory: all or nothing, durable."""
        self._path(key)  # a bad key is refused before anything is written
        self._name(self._stage(write), key)

    def _name(self, tmp_name: str, key: str) -> None:
        """Rename the synced temp file ``tmp_name`` to ``key`` and sync the directory (durable)."""
        try:
            try:
                dest = self._path(key)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_name, dest)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
                raise
            _fsync_dir(dest.parent)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write to the object store: {exc.strerror or exc}") from exc

    def _stage(self, write: Callable[[BinaryIO], object]) -> str:
        """The written data in a synced temp file under ``.tmp`` (same filesystem: renames are atomic)."""
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
            try:
                with os.fdopen(fd, "wb") as out:
                    write(out)
                    out.flush()
                    os.fdatasync(out.fileno())  # data and the size needed to read it back
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_name)
                raise
        except OSError as exc:
            raise StorageUnavailable(f"cannot write to the object store: {exc.strerror or exc}") from exc
        return tmp_name

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as fh:
            self.put_stream(key, fh)

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise NotFound(f"object {key} does not exist") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read from the object store: {exc.strerror}") from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise NotFound(f"object {key} does not exist") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read from the object store: {exc.strerror}") from exc
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def read_into(self, key: str, offset: int, buffer: memoryview) -> int:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise NotFound(f"object {key} does not exist") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read from the object store: {exc.strerror}") from exc
        try:
            got = 0
            while got < len(buffer):
                n = os.preadv(fd, [buffer[got:]], offset + got)
                if n == 0:
                    break
                got += n
            return got
        except OSError as exc:
            raise StorageUnavailable(f"cannot read from the object store: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            return ObjectInfo(key, self._path(key).stat().st_size)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageUnavailable(f"cannot reach the object store: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageUnavailable(f"cannot delete from the object store: {exc.strerror}") from exc
        # Prune empty series/study directories; a concurrent put recreates them (mkdir parents).
        for parent in (path.parent, path.parent.parent):
            if parent == self.root:
                break
            with contextlib.suppress(OSError):
                parent.rmdir()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root and ".tmp" in dirnames:
                dirnames.remove(".tmp")
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        st = os.stat(os.path.join(dirpath, name))
                        yield ObjectInfo(key, st.st_size, st.st_mtime)

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK) or not self._tmp.is_dir():
            raise StorageUnavailable(f"the object store at {self.root} is not writable")

    def probe_write(self) -> None:
        """Free space and inodes above the floor (``statvfs``, what unprivileged writers may use),
        then a small temp file created, written and removed without a sync: it fails on a
        read-only, full or failed volume, and costs a few microseconds instead of two syncs."""
        self.ping()
        try:
            fs = os.statvfs(self._tmp)
        except OSError as exc:
            raise StorageUnavailable(f"the object store at {self.root} cannot be examined: {exc.strerror}") from exc
        free = fs.f_bavail * fs.f_frsize
        if free < self.min_free_bytes or (fs.f_files and not fs.f_favail):
            raise StorageUnavailable(f"the object store at {self.root} is full ({free // _MIB} MiB free, "
                                     f"{self.min_free_bytes // _MIB} MiB needed)")
        try:
            fd, name = tempfile.mkstemp(dir=self._tmp, prefix="probe-")
            try:
                os.write(fd, b"cloudfilm readiness probe\n")
            finally:
                os.close(fd)
                os.unlink(name)
        except OSError as exc:
            raise StorageUnavailable(f"the object store at {self.root} cannot take writes: {exc.strerror}") from exc

    def cleanup_temp(self, older_than_s: float, *, remove: bool = True) -> tuple[str, ...]:
        """Temp files in ``.tmp`` not written for ``older_than_s`` seconds: a staged or atomic write
        whose process died before the rename. A live write's file is seconds old."""
        return tuple(sweep_files(self._tmp, ("*",), older_than_s, remove=remove))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep_files(directory: Path, patterns: tuple[str, ...], older_than_s: float, *, remove: bool) -> list[str]:
    """Regular files and folders in ``directory`` (not below it) matching ``patterns`` and last modified
    more than ``older_than_s`` seconds ago; removed (a folder with its contents) unless ``remove`` is
    false. A missing directory holds none."""
    cutoff = time.time() - older_than_s
    found: list[str] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise StorageUnavailable(f"cannot read {directory}: {exc.strerror or exc}") from exc
    for entry in entries:
        if not any(fnmatch.fnmatchcase(entry.name, p) for p in patterns):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            if not (is_dir or entry.is_file(follow_symlinks=False)):
                continue
            if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
            if remove and is_dir:
                shutil.rmtree(entry.path)
            elif remove:
                os.unlink(entry.path)
        except FileNotFoundError:  # its writer finished (renamed or removed it) meanwhile
            continue
        except OSError as exc:
            log.warning("cannot remove %s: %s", entry.path, exc.strerror or exc)
            continue
        found.append(entry.path)
    return found
