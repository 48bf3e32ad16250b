"""``cloudfilm backup DEST`` and ``cloudfilm restore SRC``.

A backup runs while the archive takes studies: it snapshots the index first, then copies the objects
that snapshot names (object keys embed the content digest, so an object never changes under its
key). Everything acknowledged before the backup started is in it. Into a folder that already holds a
backup, only objects not there yet are copied (an object is there when its file has the size and
the SHA-256 the previous manifest recorded for it); objects no longer indexed are removed after the
new manifest is in place. A restore rebuilds an archive from a backup into an empty target, of the
same kind or from SQLite + filesystem into PostgreSQL + S3.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pacs import __version__
from pacs.accounts.keys import KEY_FILE, secret_key_text
from pacs.archive import Archive, missing_index
from pacs.backup.index_copy import index_kind, restore_index, snapshot
from pacs.backup.manifest import (
    INDEX_FILES,
    MANIFEST,
    OBJECT_LIST,
    OBJECTS_DIR,
    SECRET_KEY_FILE,
    Manifest,
    ObjectEntry,
    format_object_list,
    read_manifest,
    read_object_list,
    sync_dir,
    write_atomically,
)
from pacs.errors import NotFound, SettingsError, StorageUnavailable
from pacs.index import db
from pacs.index.db import utcnow
from pacs.nodes import forget_nodes
from pacs.settings import Settings
from pacs.storage import ObjectStore, open_store
from pacs.storage.base import PROBE_KEY
from pacs.storage.references import is_instance_key

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
Progress = Callable[[str, int, int], None]  # (step, done, total)


def _no_progress(step: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True, slots=True)
class RestoreReport:
    instances: int
    objects: int
    object_bytes: int
    secret_key: bool


# --- backup ---------------------------------------------------------------------------------------


def backup(archive: Archive, dest: Path, *, with_secret_key: bool = False, jobs: int = 8,
           progress: Progress = _no_progress) -> Manifest:  # fmt: skip
    """Write a consistent copy of the running archive into ``dest`` (created, or updated in place)."""
    dest.mkdir(parents=True, exist_ok=True)
    with _locked(dest):
        previous = read_manifest(dest)
        known = _known_objects(dest, previous)
        started = utcnow()
        kind = index_kind(archive.settings.resolved_database_url)
        index_file = INDEX_FILES[kind]
        progress("index", 0, 1)
        snap = snapshot(archive.engine, dest / index_file)
        progress("index", 1, 1)
        objects_dir = dest / OBJECTS_DIR
        todo = [e for e in snap.objects if known.get(e.key) != (e.size, e.sha256) or not _has(objects_dir, e)]
        copied, missing = _copy_out(archive, todo, objects_dir, jobs, progress, len(snap.objects))
        kept = [e for e in snap.objects if e.key not in missing]
        object_list = format_object_list(kept)
        write_atomically(dest / OBJECT_LIST, object_list)
        secret = _copy_secret_key(archive.settings, dest) if with_secret_key else False
        if not with_secret_key:
            (dest / SECRET_KEY_FILE).unlink(missing_ok=True)
        manifest = Manifest(
            cloudfilm_version=__version__, started_at=started.isoformat(), finished_at=utcnow().isoformat(),
            index_kind=kind, index_file=index_file, index_sha256=_sha256_file(dest / index_file),
            index_revision=snap.revision, instances=sum(map(is_instance_key, (e.key for e in snap.objects))),
            objects=len(kept),
            object_bytes=sum(e.size for e in kept), object_list_sha256=hashlib.sha256(object_list).hexdigest(),
            copied=copied, missing=sorted(missing), secret_key=secret)  # fmt: skip
        write_atomically(dest / MANIFEST, manifest.to_json().encode("utf-8"))
        for other in set(INDEX_FILES.values()) - {index_file}:
            (dest / other).unlink(missing_ok=True)
        _prune(objects_dir, {e.key for e in kept})
    return manifest


@contextmanager
def _locked(dest: Path) -> Iterator[None]:
    with open(dest / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SettingsError(f"another backup or restore is using {dest}") from None
        yield


def _known_objects(dest: Path, previous: Manifest | None) -> dict[str, tuple[int, str]]:
    """The objects the previous backup in ``dest`` verified, by key; none without one."""
    if previous is None or not (dest / OBJECT_LIST).exists():
        return {}
    return {e.key: (e.size, e.sha256) for e in read_object_list(dest)}


def _has(objects_dir: Path, entry: ObjectEntry) -> bool:
    try:
        return (objects_dir / entry.key).stat().st_size == entry.size
    except FileNotFoundError:
        return False


def _copy_out(archive: Archive, todo: list[ObjectEntry], objects_dir: Path, jobs: int, progress: Progress,
              total: int) -> tuple[int, set[str]]:  # fmt: skip
    """Copy ``todo`` from the store into ``objects_dir``, each verified against its SHA-256; returns
    how many were copied and the keys the store no longer had (deleted since the snapshot)."""
    missing: set[str] = set()
    done = total - len(todo)
    progress("objects", done, total)

    def one(entry: ObjectEntry) -> bool:
        target = objects_dir / entry.key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with archive.store.open(entry.key) as source:
                _write_verified(source, target, entry)
        except NotFound:
            return False
        return True

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="backup") as pool:
        for entry, ok in zip(todo, pool.map(one, todo), strict=True):
            if not ok:
                log.warning("object %s was deleted after the index snapshot; it is not in this backup", entry.key)
                missing.add(entry.key)
            done += 1
            if done % 100 == 0 or done == total:
                progress("objects", done, total)
    for folder in {(objects_dir / e.key).parent for e in todo}:
        if folder.exists():
            sync_dir(folder)
    return len(todo) - len(missing), missing


def _write_verified(source: BinaryIO, target: Path, entry: ObjectEntry) -> None:
    tmp = target.with_name(target.name + ".tmp")
    digest = hashlib.sha256()
    size = 0
    with open(tmp, "wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if size != entry.size or digest.hexdigest() != entry.sha256:
        tmp.unlink()
        raise StorageUnavailable(f"object {entry.key} read back {size} bytes with another SHA-256 than indexed; "
                                 "run `cloudfilm fsck --deep`")  # fmt: skip
    os.replace(tmp, target)


def _copy_secret_key(settings: Settings, dest: Path) -> bool:
    target = dest / SECRET_KEY_FILE
    write_atomically(target, (secret_key_text(settings) + "\n").encode("utf-8"))
    target.chmod(0o600)
    return True


def _prune(objects_dir: Path, keep: set[str]) -> None:
    if not objects_dir.exists():
        return
    for root, _dirs, files in os.walk(objects_dir, topdown=False):
        for name in files:
            path = Path(root) / name
            if path.relative_to(objects_dir).as_posix() not in keep:
                path.unlink()
        if root != str(objects_dir) and not os.listdir(root):
            os.rmdir(root)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- restore --------------------------------------------------------------------------------------


def restore(source: Path, settings: Settings, *, jobs: int = 8, progress: Progress = _no_progress) -> RestoreReport:
    """Rebuild an archive from the backup in ``source`` into the empty archive ``settings`` name."""
    manifest = read_manifest(source)
    if manifest is None:
        raise SettingsError(f"{source} holds no cloudfilm backup ({MANIFEST} not found)")
    with _locked(source):
        index_file = source / manifest.index_file
        if _sha256_file(index_file) != manifest.index_sha256:
            raise SettingsError(f"{index_file} does not match the backup's manifest (damaged backup)")
        if hashlib.sha256((source / OBJECT_LIST).read_bytes()).hexdigest() != manifest.object_list_sha256:
            raise SettingsError(f"{source / OBJECT_LIST} does not match the backup's manifest (damaged backup)")
        entries = list(read_object_list(source))
        _require_empty(settings, entries)
        _copy_in(source / OBJECTS_DIR, entries, settings, jobs, progress)  # objects first: the index names them
        progress("index", 0, 1)
        restore_index(manifest.index_kind, index_file, manifest.index_revision, settings.resolved_database_url)
        engine = db.make_engine(settings.resolved_database_url)
        try:
            db.upgrade(engine)  # a backup of an earlier version comes up to this one's schema
            forget_nodes(engine)  # else the source's nodes, live at the snapshot, refuse a restored key
        finally:
            engine.dispose()
        progress("index", 1, 1)
        secret = _restore_secret_key(source, settings) if manifest.secret_key else False
    return RestoreReport(manifest.instances, len(entries), sum(e.size for e in entries), secret)


def _require_empty(settings: Settings, entries: list[ObjectEntry]) -> None:
    """The target index must not exist yet; its store may hold only objects of this backup (those of
    a restore that was cut off, which the next run skips)."""
    if index_kind(settings.resolved_database_url) == "sqlite":
        if missing_index(settings) is None:
            raise SettingsError(f"the target already holds an archive ({settings.resolved_database_url}); "
                                "restore into an empty data directory or database")
    else:
        engine = db.make_engine(settings.resolved_database_url)
        try:
            if db.current_revision(engine) is not None:
                raise SettingsError("the target database already holds a cloudfilm index; restore into an "
                                    "empty database")
        finally:
            engine.dispose()
    listed = {e.key for e in entries}
    store = open_store(settings)
    try:
        foreign = next((o.key for o in store.list() if o.key != PROBE_KEY and o.key not in listed), None)
    finally:
        store.close()
    if foreign is not None:
        raise SettingsError(f"the target object store {store.url} holds objects of another archive "
                            f"({foreign}); restore into an empty one")


def _copy_in(objects_dir: Path, entries: list[ObjectEntry], settings: Settings, jobs: int,
             progress: Progress) -> None:  # fmt: skip
    store = open_store(settings)

    def one(entry: ObjectEntry) -> None:
        if _stored(store, entry):
            return
        path = objects_dir / entry.key
        if path.stat().st_size != entry.size or _sha256_file(path) != entry.sha256:
            raise SettingsError(f"{path} does not match the backup's object list (damaged backup)")
        store.put_file(entry.key, path)

    try:
        done = 0
        progress("objects", 0, len(entries))
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="restore") as pool:
            for _ in pool.map(one, entries):
                done += 1
                if done % 100 == 0 or done == len(entries):
                    progress("objects", done, len(entries))
    except FileNotFoundError as exc:
        raise SettingsError(f"the backup lacks an object it lists: {exc.filename}") from exc
    finally:
        store.close()


def _stored(store: ObjectStore, entry: ObjectEntry) -> bool:
    """Whether a cut-off restore already stored this object (keys name the content)."""
    info = store.head(entry.key)
    return info is not None and info.size == entry.size


def _restore_secret_key(source: Path, settings: Settings) -> bool:
    if settings.secret_key is not None:
        return False  # the target's own setting wins
    target = settings.data_dir / KEY_FILE
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / SECRET_KEY_FILE, target)
    target.chmod(0o600)
    return True

