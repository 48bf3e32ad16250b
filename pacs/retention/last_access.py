"""When a study was last opened: ``studies.last_accessed_at``, for the ``idle_days`` retention condition.

Written when an access is audited (viewer page, WADO-RS/URI, downloads, C-MOVE/C-GET, share
opens: :data:`pacs.accounts.audit.ACCESS_ACTIONS`), at most once per :data:`RESOLUTION` per study:
each process remembers which studies it stamped within the hour and skips them without touching
the database, and the ``UPDATE`` itself only moves a stamp older than that, so many processes
opening one study write it about once an hour between them.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import Connection, or_, update

from pacs.access import DEFAULT_PARTITION
from pacs.index.models import Study

RESOLUTION = timedelta(hours=1)
_MAX_REMEMBERED = 100_000


class AccessStamps:
    """This process's memory of the studies it stamped, and when."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamped: dict[str, datetime] = {}

    def due(self, study_uid: str, now: datetime, partition: int = DEFAULT_PARTITION) -> bool:
        """Whether ``study_uid`` needs a stamp now (and claim it: a concurrent caller gets ``False``)."""
        key = study_uid if partition == DEFAULT_PARTITION else f"{partition}:{study_uid}"
        with self._lock:
            last = self._stamped.get(key)
            if last is not None and now - last < RESOLUTION:
                return False
            if len(self._stamped) >= _MAX_REMEMBERED:
                cutoff = now - RESOLUTION
                self._stamped = {k: v for k, v in self._stamped.items() if v > cutoff}
            self._stamped[key] = now
            return True

    def forget(self, study_uid: str, partition: int = DEFAULT_PARTITION) -> None:
        with self._lock:
            self._stamped.pop(study_uid if partition == DEFAULT_PARTITION else f"{partition}:{study_uid}", None)


STAMPS = AccessStamps()


def stamp(conn: Connection, study_uid: str, now: datetime, partition: int = DEFAULT_PARTITION) -> None:
    """In the caller's transaction: record that ``partition``'s ``study_uid`` was opened ``now`` unless done
    within the hour."""
    conn.execute(update(Study).where(Study.study_uid == study_uid, Study.partition_fk == partition,
                                     or_(Study.last_accessed_at.is_(None), Study.last_accessed_at < now - RESOLUTION))
                 .values(last_accessed_at=now))  # fmt: skip
