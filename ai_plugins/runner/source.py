"""The SDK's :class:`~ai_plugins.sdk.InstanceSource` over the archive: index for the listing,
:mod:`pacs.retrieve` for the bytes, restricted to the one study the job is about."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine

from ai_plugins.runner.routing import StudyContents, study_contents
from ai_plugins.sdk import SeriesInfo
from pacs.access import AccessScope
from pacs.retrieve import find_instances, open_instance
from pacs.storage import ObjectStore

_READERS = 8


class ArchiveSource:
    """Series of one study from the index (without plugin output), instances read from the object store."""

    def __init__(self, engine: Engine, store: ObjectStore, study_uid: str) -> None:
        self.engine = engine
        self.store = store
        self.study_uid = study_uid
        self.scope = AccessScope.studies(study_uid)
        self._contents: StudyContents | None = None

    @property
    def contents(self) -> StudyContents:
        if self._contents is None:
            with self.engine.connect() as conn:
                self._contents = study_contents(conn, self.study_uid)
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
