"""Sessions for the accounts services: each service call owns one short transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pacs.errors import StorageUnavailable


@contextmanager
def writing(engine: Engine) -> Iterator[Session]:
    """A session in one write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
    try:
        with engine.connect() as conn:
            conn.info["write"] = True
            try:
                with Session(bind=conn, expire_on_commit=False) as session, conn.begin():
                    yield session
                    session.flush()
            finally:
                conn.info.pop("write", None)
    except SQLAlchemyError as exc:
        raise StorageUnavailable("the index database refused the change") from exc


@contextmanager
def reading(engine: Engine) -> Iterator[Session]:
    """A read-only session."""
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    except SQLAlchemyError as exc:
        raise StorageUnavailable("the index database is unreachable") from exc


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for ``DateTime(timezone=True)``; they are UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def aware_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else aware(value)
