"""The SDK's :class:`~ai_plugins.sdk.InstanceSource` over the archive: index for the listing,
:mod:`pacs.retrieve` for the bytes, restricted to the one study the job is about.

A :class:`StudyReader` is how a plugin's child process opens its study: :class:`ArchiveReader` on a
worker of the archive (its own engine and object store connection), the DICOMweb reader of
:mod:`ai_plugins.edge.source` on an edge worker. Readers are pickled to the child.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine

from ai_plugins.runner.routing import StudyContents, study_contents
from ai_plugins.sdk import InstanceSource, SeriesInfo
from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.retrieve import find_instances, open_instance
from pacs.settings import Settings
from pacs.storage import ObjectStore


class StudyReader(Protocol):
    """Opens one study's instances for a plugin (in the plugin's child process)."""

    def open(self, study_uid: str) -> AbstractContextManager[InstanceSource]: ...


@dataclass(frozen=True, slots=True)
class ArchiveReader:
    """The study read from the archive's index and object store, named by ``settings``."""

    settings: Settings
    partition: int = DEFAULT_PARTITION  # the partition whose study is read

    @contextmanager
    def open(self, study_uid: str) -> Iterator[InstanceSource]:
        from pacs.index import db
        from pacs.storage import open_store

        engine = db.make_engine(self.settings.resolved_database_url, pool_size=2)
        store = open_store(self.settings)
        try:
            yield ArchiveSource(engine, store, study_uid, self.partition)
        finally:
            store.close()
            engine.dispose()

_READERS = 8


class ArchiveSource:
    """Series of one study from the index (without plugin output), instances read from the object store."""

    def __init__(self, engine: Engine, store: ObjectStore, study_uid: str, partition: int = DEFAULT_PARTITION) -> None:
        self.engine = engine
        self.store = store
        self.study_uid = study_uid
        self.partition = partition
        self.scope = AccessScope.studies(study_uid, partition=partition)
        self._contents: StudyContents | None = None

    @property
    def contents(self) -> StudyContents:
        if self._contents is None:
            with self.engine.connect() as conn:
                self._contents = study_contents(conn, self.study_uid, self.partition)
        return self._contents

    def list_series(self) -> Sequence[SeriesInfo]:
        return self.contents.series

    def read_instances(self, series_uid: str) -> Sequence[bytes]:
        """Every instance of the series as stored (Part 10 bytes), read concurrently."""
        located = find_instances(self.engine, self.scope, study_uid=self.study_uid, series_uid=series_uid)

        def read(i: int) -> bytes:
            with open_instance(self.store, located[i]) as fh:
                return fh.read()

        if len(located) == 1:
            return [read(0)]
        with ThreadPoolExecutor(min(_READERS, len(located)), thread_name_prefix="plugin-reader") as pool:
            return list(pool.map(read, range(len(located))))
