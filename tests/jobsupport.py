"""Helpers shared by the job, stability and AI runner tests (not fixtures: each test module wraps them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from pacs.index.db import utcnow
from pacs.settings import Settings
from tests.pg import temporary_database

DB_BACKENDS = ["sqlite", "postgres"]


@contextmanager
def db_settings(backend: str, tmp_path: Path, **overrides: object) -> Iterator[Settings]:
    """Settings for an empty archive whose index is SQLite or a fresh PostgreSQL database (objects on disk)."""
    base: dict[str, object] = {"data_dir": tmp_path / "data", "http_port": 0, "dicom_port": 0}
    base.update(overrides)
    if backend == "sqlite":
        yield Settings(**base)  # type: ignore[arg-type]
        return
    with temporary_database() as url:
        yield Settings(database_url=url, **base)  # type: ignore[arg-type]


class FakeClock:
    """A settable clock for the queue and the detector: starts at the real now, moves when told."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now
