"""The archive's running parts in one process: settings, index engine, object store, ingest."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from pacs.errors import NoArchive, StorageUnavailable
from pacs.index import db
from pacs.ingest import IngestService
from pacs.partitions import PartitionDirectory, sync_partitions
from pacs.settings import Settings
from pacs.storage import ObjectStore, open_store

log = logging.getLogger(__name__)


@dataclass
class Archive:
    """Composition root for the ``pacs`` layer; entry points get everything from here."""

    settings: Settings
    engine: Engine
    store: ObjectStore
    ingest: IngestService
    partitions: PartitionDirectory = field(default_factory=lambda: PartitionDirectory.single(""))
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True, create: bool = True) -> Archive:
        """Connect to the index (migrating it unless told not to) and the object store.

        With ``create=False`` an index that does not exist yet is :class:`NoArchive`, and nothing
        is created (no data directory, no database file)."""
        if not create and (missing := missing_index(settings)) is not None:
            raise NoArchive(missing)
        engine = db.make_engine(settings.resolved_database_url)
        if not create:
            try:
                empty = db.current_revision(engine) is None
            except StorageUnavailable:
                engine.dispose()
                raise
            if empty:
                engine.dispose()
                raise NoArchive(_no_archive(f"the database {engine.url.render_as_string(hide_password=True)} "
                                            "holds no cloudfilm index"))
        if migrate:
            db.upgrade(engine)
        try:
            partitions = sync_partitions(engine, settings.ae_title, settings.partitions)
        except SQLAlchemyError as exc:
            engine.dispose()
            raise StorageUnavailable(f"cannot read the partitions: {str(exc).splitlines()[0]}") from exc
        store = open_store(settings)
        ingest = IngestService(engine, store, overwrite=settings.overwrite,
                               accept_short_pixel_data=settings.ingest_accept_short_pixel_data,
                               rejection_grace=settings.rejection_grace)
        return cls(settings, engine, store, ingest, partitions)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.store.close()
        self.engine.dispose()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def missing_index(settings: Settings) -> str | None:
    """Why ``settings`` name no existing archive, when its index is an SQLite file that is not there
    (a server database is checked once connected); ``None`` otherwise."""
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database)
    if path.exists():
        return None
    if settings.database_url:
        return _no_archive(f"its index {path} does not exist")
    return _no_archive(f"there is no archive in {settings.data_dir.resolve()} (no index {path.name} there)")


def _no_archive(why: str) -> str:
    return (f"{why}; point at your archive with --data-dir, CLOUDFILM_DATA_DIR or --config "
            "(CLOUDFILM_DATABASE_URL for a server database), or create one with `cloudfilm serve` "
            "or `cloudfilm db upgrade`")
