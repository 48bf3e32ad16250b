"""The archive's running parts in one process: settings, index engine, object store, ingest."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import Engine

from pacs.index import db
from pacs.ingest import IngestService
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
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Archive:
        """Connect to the index (migrating it unless told not to) and the object store."""
        engine = db.make_engine(settings.resolved_database_url)
        if migrate:
            db.upgrade(engine)
        store = open_store(settings)
        ingest = IngestService(engine, store, overwrite=settings.overwrite,
                               accept_short_pixel_data=settings.ingest_accept_short_pixel_data)
        return cls(settings, engine, store, ingest)

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
