"""What a backup folder holds and how it says so: ``manifest.json`` names the index snapshot and the
object list; written last and renamed into place, so a folder with a manifest is a whole backup.

Layout of a backup folder::

    manifest.json          this manifest (format 1)
    index.sqlite3          the index, when the archive's index is SQLite (online backup API)
    index.pgdump           the index, when it is PostgreSQL (pg_dump custom format)
    objects.tsv            one line per object: key, size, SHA-256
    objects/<key>          the objects, byte for byte, under their archive keys
    secret_key             only with ``--with-secret-key``
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pacs.errors import InvalidDataset, SettingsError
from pacs.storage.keys import check_key

FORMAT = 1
MANIFEST = "manifest.json"
OBJECT_LIST = "objects.tsv"
OBJECTS_DIR = "objects"
SECRET_KEY_FILE = "secret_key"
INDEX_FILES = {"sqlite": "index.sqlite3", "postgresql": "index.pgdump"}


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    cloudfilm_version: str
    started_at: str  # ISO 8601 UTC: everything acknowledged before this is in the backup
    finished_at: str
    index_kind: str  # "sqlite" | "postgresql"
    index_file: str
    index_sha256: str
    index_revision: str  # the Alembic revision of the snapshot
    instances: int
    objects: int
    object_bytes: int
    object_list_sha256: str
    copied: int  # objects written by this run (the rest were already there)
    missing: list[str] = field(default_factory=list)  # keys indexed but gone from the store by then
    secret_key: bool = False
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest of the backup in ``folder``; ``None`` when there is none yet."""
    path = folder / MANIFEST
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path} is not a cloudfilm backup manifest: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise SettingsError(f"{path} is not a cloudfilm backup manifest of format {FORMAT}")
    try:
        return Manifest(**raw)
    except TypeError as exc:
        raise SettingsError(f"{path} is not a cloudfilm backup manifest: {exc}") from exc


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    sync_dir(path.parent)


def sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def format_object_list(entries: Iterable[ObjectEntry]) -> bytes:
    return "".join(f"{e.key}\t{e.size}\t{e.sha256}\n" for e in entries).encode("ascii")


def read_object_list(folder: Path) -> Iterator[ObjectEntry]:
    """The objects of the backup in ``folder``; a key that could escape the folder is refused."""
    with open(folder / OBJECT_LIST, encoding="ascii") as fh:
        for number, line in enumerate(fh, 1):
            try:
                key, size, sha256 = line.rstrip("\n").split("\t")
                yield ObjectEntry(check_key(key), int(size), sha256)
            except (ValueError, InvalidDataset) as exc:
                raise SettingsError(f"{folder / OBJECT_LIST} line {number} is not an object entry: {exc}") from exc
