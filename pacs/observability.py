"""Metrics read when Prometheus scrapes: the job queue (depth and age by kind, dead letters) from the
index, and the free disk space under the archive's directories. The event metrics (requests,
associations, job attempts, store and database calls) are in :mod:`pacs.metrics`."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from pacs import __version__, metrics
from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.jobs import Job, JobStatus, aware

_COUNTED = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING, JobStatus.FAILED)  # index-backed
_WAITING = (JobStatus.QUEUED, JobStatus.RETRYING)


class ArchiveCollector(Collector):
    """``cloudfilm_node_info``, ``cloudfilm_jobs``, ``cloudfilm_job_oldest_due_seconds`` and
    ``cloudfilm_disk_free_bytes`` of one archive."""

    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily("cloudfilm_node_info", "The node answering (its host name), its version and "
                                 "its serving processes; always 1", labels=["node", "version", "processes"])
        info.add_metric([socket.gethostname(), __version__, str(self._archive.settings.serve_processes)], 1)
        yield info
        jobs = GaugeMetricFamily("cloudfilm_jobs", "Jobs by kind and status (failed: dead-lettered)",
                                 labels=["kind", "status"])
        oldest = GaugeMetricFamily("cloudfilm_job_oldest_due_seconds",
                                   "How long the oldest job that is due has waited for a worker, by kind",
                                   labels=["kind"])
        now = utcnow()
        try:
            with self._archive.engine.connect() as conn:
                counts = conn.execute(select(Job.kind, Job.status, func.count()).where(
                    Job.status.in_([s.value for s in _COUNTED])).group_by(Job.kind, Job.status)).all()
                due = conn.execute(select(Job.kind, func.min(Job.run_after)).where(
                    Job.status.in_([s.value for s in _WAITING]), Job.run_after <= now).group_by(Job.kind)).all()
        except SQLAlchemyError:
            metrics.DATABASE_ERRORS.inc()
            counts, due = [], []
        for kind, status, count in counts:
            jobs.add_metric([kind, status], count)
        for kind, first in due:
            oldest.add_metric([kind], max(0.0, (now - aware(first)).total_seconds()))
        yield jobs
        yield oldest
        disk = GaugeMetricFamily("cloudfilm_disk_free_bytes", "Free bytes on the filesystem of each archive "
                                 "directory (the object store's, when it is a filesystem)", labels=["path"])
        for name, path in self._directories():
            try:
                stat = os.statvfs(path)
            except OSError:
                continue
            disk.add_metric([name], stat.f_bavail * stat.f_frsize)
        yield disk

    def _directories(self) -> Iterator[tuple[str, Path]]:
        settings = self._archive.settings
        yield "data", settings.data_dir
        yield "spool", settings.spool_dir
        root = getattr(self._archive.store, "root", None)
        if isinstance(root, Path):
            yield "objects", root
