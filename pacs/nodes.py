"""The nodes serving one archive: each ``serve`` process registers in the index, says it is alive
every few seconds and leaves on a clean stop.

Nodes of one archive must sign with one secret key, or a session, bearer token or share link made
by one is refused by the others. A node records a fingerprint of its key (an HMAC of a fixed label,
never the key) and will not start beside a live node whose fingerprint differs: the operator sets
the same ``CLOUDFILM_SECRET_KEY`` on every node instead of discovering it from users' failures.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import DateTime, Engine, String, delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from pacs import __version__
from pacs.accounts.keys import secret_key
from pacs.archive import Archive
from pacs.errors import SettingsError
from pacs.index.db import utcnow
from pacs.index.models import Base
from pacs.jobs import aware

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
ALIVE = timedelta(seconds=3 * HEARTBEAT_S)  # a node not heard from for this long is gone


class NodeRow(Base):
    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(32))
    key_fingerprint: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: str
    version: str
    started_at: datetime
    seen_at: datetime


def key_fingerprint(key: bytes) -> str:
    return hmac.new(key, b"cloudfilm node key check", hashlib.sha256).hexdigest()[:32]


def live_nodes(engine: Engine) -> list[NodeView]:
    """The nodes heard from lately, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(NodeRow.node_id, NodeRow.version, NodeRow.started_at, NodeRow.seen_at)
                            .where(NodeRow.seen_at > utcnow() - ALIVE).order_by(NodeRow.started_at)).all()
    return [NodeView(r.node_id, r.version, aware(r.started_at), aware(r.seen_at)) for r in rows]


def forget_nodes(engine: Engine) -> int:
    """Remove every node row (after a restore: the rows name the source's processes, alive when the
    backup's snapshot was taken; none of them serves the restored archive, whose key may differ)."""
    with engine.begin() as conn:
        return conn.execute(delete(NodeRow)).rowcount or 0


class NodeRegistry:
    """This node's row: written at :meth:`start` (after the key check), refreshed by a thread."""

    name = "node"

    def __init__(self, archive: Archive, role: str) -> None:
        self._engine = archive.engine
        self._fingerprint = key_fingerprint(secret_key(archive.settings))
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{role}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Register, or refuse (:class:`SettingsError`) beside a live node with another secret key."""
        now = utcnow()
        with self._engine.begin() as conn:
            others = conn.execute(select(NodeRow.node_id, NodeRow.key_fingerprint, NodeRow.seen_at).where(
                NodeRow.seen_at > now - ALIVE, NodeRow.node_id != self.node_id)).all()  # fmt: skip
            for node_id, fingerprint, seen in others:
                if fingerprint != self._fingerprint:
                    ago = (now - aware(seen)).total_seconds()
                    raise SettingsError(f"node {node_id} of this archive (seen {ago:.0f} s ago) signs with another "
                                        "secret key: set the same CLOUDFILM_SECRET_KEY on every node")
            conn.execute(delete(NodeRow).where(NodeRow.node_id == self.node_id))
            conn.execute(insert(NodeRow).values(node_id=self.node_id, version=__version__,
                                                key_fingerprint=self._fingerprint, started_at=now, seen_at=now))
        self._thread = threading.Thread(target=self._beat, name="node-heartbeat", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        return self._thread is not None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            with self._engine.begin() as conn:
                conn.execute(delete(NodeRow).where(NodeRow.node_id == self.node_id))
        except SQLAlchemyError:
            log.warning("node %s could not sign off; it counts as gone %s after its last heartbeat",
                        self.node_id, ALIVE)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with self._engine.begin() as conn:
                    conn.execute(update(NodeRow).where(NodeRow.node_id == self.node_id).values(seen_at=utcnow()))
            except SQLAlchemyError:  # the database is briefly away: the next beat retries
                log.warning("node heartbeat failed; retrying")
