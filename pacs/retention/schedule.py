"""The nightly retention job (``kind = "retention"``): one per day, whatever the number of workers.

Each day's job is keyed by its date (the job queue's ``dedupe_key``), so every worker may try to
queue it and exactly one job exists; each worker remembers the day it queued (or found) so that
it asks the database once a day, not once a poll.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine

from pacs.jobs import JobSpec, dedupe_key, enqueue, write_transaction
from pacs.retention.rules import run_at_time

JOB_KIND = "retention"
JOB_TIMEOUT_S = 6 * 3600.0


def due_day(now: datetime, run_at: str) -> date:
    """The day of the latest run due at ``now``: today once ``run_at`` (UTC) has passed, else yesterday."""
    hour, minute = run_at_time(run_at)
    now = now.astimezone(UTC)
    slot = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return now.date() if now >= slot else now.date() - timedelta(days=1)


def job_spec(day: date) -> JobSpec:
    return JobSpec(kind=JOB_KIND, dedupe_key=dedupe_key(JOB_KIND, day.isoformat()), target=day.isoformat(),
                   max_attempts=3, timeout_s=JOB_TIMEOUT_S)  # fmt: skip


class NightlySchedule:
    """Queues each day's job once ``run_at`` has passed; one instance per worker process."""

    def __init__(self, run_at: str) -> None:
        self.run_at = run_at
        self._queued: date | None = None

    def tick(self, engine: Engine, now: datetime) -> bool:
        """Queue the day's job unless this process already did (or saw it); whether a job was added."""
        day = due_day(now, self.run_at)
        if self._queued == day:
            return False
        with write_transaction(engine) as conn:
            added = enqueue(conn, job_spec(day), now=now) is not None
        self._queued = day
        return added
