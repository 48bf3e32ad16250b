"""Edge workers' credentials (issue 15): ``cloudfilm edge-workers add NAME`` prints a token that lets
one machine at a hospital lease clinical plugin jobs over ``/api/edge/…`` and nothing else.

A token is ``cfe_`` + 256 random bits, shown once; only its SHA-256 digest is stored. Revoking a
worker refuses its next request; a job it holds is retried elsewhere once the lease expires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, select

from pacs.accounts.hashing import digest, new_token
from pacs.accounts.models import EdgeCredential
from pacs.accounts.tx import aware, aware_or_none, reading, writing
from pacs.errors import Conflict, NotFound
from pacs.index.db import utcnow

PREFIX = "cfe_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is refreshed at most this often

@dataclass(frozen=True, slots=True)
class EdgeWorkerInfo:
    name: str
    created_by: str
    created_at: datetime
    last_seen_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _info(row: EdgeCredential) -> EdgeWorkerInfo:
    return EdgeWorkerInfo(row.name, row.created_by, aware(row.created_at), aware_or_none(row.last_seen_at),
                          aware_or_none(row.revoked_at))  # fmt: skip


def add_edge_worker(engine: Engine, name: str, *, created_by: str) -> tuple[EdgeWorkerInfo, str]:
    """A new edge worker: its description and the clear token (never retrievable again)."""
    if not NAME_PATTERN.match(name):
        raise Conflict("an edge worker's name is 1 to 64 letters, digits, dots, dashes or underscores")
    clear = new_token(PREFIX)
    with reading(engine) as session:
        if session.scalar(select(EdgeCredential.id).where(EdgeCredential.name == name)) is not None:
            raise Conflict(f"there is already an edge worker named {name!r}")
    with writing(engine) as session:
        row = EdgeCredential(name=name, token_hash=digest(clear), created_by=created_by[:64], created_at=utcnow())
        session.add(row)
        session.flush()
        return _info(row), clear


def list_edge_workers(engine: Engine) -> list[EdgeWorkerInfo]:
    with reading(engine) as session:
        return [_info(r) for r in session.scalars(select(EdgeCredential).order_by(EdgeCredential.name))]


def revoke_edge_worker(engine: Engine, name: str) -> EdgeWorkerInfo:
    """Refuse the worker's token from now on (revoking twice is harmless)."""
    with writing(engine) as session:
        row = session.scalar(select(EdgeCredential).where(EdgeCredential.name == name))
        if row is None:
            raise NotFound(f"there is no edge worker named {name!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _info(row)


def authenticate_edge_worker(engine: Engine, clear: str) -> EdgeWorkerInfo | None:
    """The unrevoked edge worker holding this token, or ``None``."""
    if not clear.startswith(PREFIX):
        return None
    with reading(engine) as session:
        row = session.scalar(select(EdgeCredential).where(EdgeCredential.token_hash == digest(clear)))
        if row is None or row.revoked_at is not None:
            return None
        info = _info(row)
    if info.last_seen_at is None or utcnow() - info.last_seen_at > _TOUCH_EVERY:
        with writing(engine) as session:
            fresh = session.scalar(select(EdgeCredential).where(EdgeCredential.name == info.name))
            if fresh is not None:
                fresh.last_seen_at = utcnow()
    return info
