"""The edge worker's view of the archive's job queue, over the edge job API (``/api/edge/jobs``).

:class:`RemoteJobQueue` is a :class:`~ai_plugins.runner.handler.LeaseQueue`, so the edge worker runs
the archive's own job loop and lease heartbeat unchanged. A 409 from the archive means the lease is
no longer this attempt's (:class:`~pacs.jobs.LeaseLost`, or ``False`` from a heartbeat); the archive
wrote nothing for the request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from ai_plugins.edge.protocol import (
    CompleteIn,
    FailIn,
    HeartbeatIn,
    JobGrantOut,
    LeaseIn,
    LeaseOut,
    OfferedPlugin,
    OutcomeOut,
    ReleaseIn,
)
from ai_plugins.runner.routing import JOB_KIND
from pacs.errors import CloudfilmError
from pacs.jobs import ClaimedJob, JobStatus, LeaseLost

log = logging.getLogger(__name__)

USER_AGENT = "cloudfilm-edge-worker"


class ArchiveRefused(CloudfilmError):
    """The archive answered an edge request with an error other than a lost lease."""


class ArchiveClient:
    """An HTTP client of one archive, authenticated with an edge worker's token."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport,
                                 headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT})  # fmt: skip

    @property
    def dicomweb_url(self) -> str:
        return f"{self.base_url}/dicomweb"

    def post(self, path: str, body: BaseModel) -> httpx.Response:
        """POST ``body`` as JSON; raises :class:`LeaseLost` on 409 and :class:`ArchiveRefused` on other errors
        (422 is the caller's to read)."""
        response = self.http.post(f"/api/edge/jobs{path}", content=body.model_dump_json(),
                                  headers={"Content-Type": "application/json"})  # fmt: skip
        if response.status_code == 409:
            raise LeaseLost(response.text.strip())
        if response.status_code >= 400 and response.status_code != 422:
            raise ArchiveRefused(f"the archive answered {response.status_code}: {response.text.strip()[:300]}")
        return response

    def download(self, path: str, sink: Callable[[bytes], object]) -> None:
        """GET ``path`` and hand the body to ``sink`` chunk by chunk; :class:`ArchiveRefused` unless 200."""
        with self.http.stream("GET", path) as response:
            if response.status_code != 200:
                response.read()
                raise ArchiveRefused(f"the archive answered {response.status_code}: {response.text.strip()[:300]}")
            for chunk in response.iter_bytes(1 << 20):
                sink(chunk)

    def close(self) -> None:
        self.http.close()


class RemoteJobQueue:
    """Lease, heartbeat and finish jobs through the archive; one per edge worker process.

    ``offered`` lists the plugins installed here at each lease request; with ``packages`` the worker
    asks for jobs of admitted packages too. The grant of each held job (its study's series, DICOMweb
    token and package) stays here for the handler until the attempt ends.
    """

    def __init__(self, client: ArchiveClient, offered: Callable[[], Sequence[tuple[str, str]]], *,
                 packages: bool = False) -> None:  # fmt: skip
        self.client = client
        self.offered = offered
        self.packages = packages
        self._lease_s = 60.0
        self._grants: dict[int, JobGrantOut] = {}
        self._lock = threading.Lock()
        self._unreachable = False

    @property
    def lease_s(self) -> float:
        return self._lease_s

    def grant(self, job: ClaimedJob) -> JobGrantOut:
        with self._lock:
            return self._grants[job.id]

    def claim(self, owner: str, kinds: Sequence[str], limit: int = 1) -> list[ClaimedJob]:
        offered = [OfferedPlugin(name=n, version=v) for n, v in self.offered()]
        if JOB_KIND not in kinds or not (offered or self.packages):
            return []
        try:
            response = self.client.post("/lease", LeaseIn(worker_id=owner, plugins=offered, packages=self.packages))
        except (httpx.HTTPError, ArchiveRefused) as exc:
            if not self._unreachable:  # once per outage, not once per poll
                log.warning("cannot lease jobs from %s: %s", self.client.base_url, exc)
            self._unreachable = True
            return []
        if self._unreachable:
            log.info("the archive %s answers again", self.client.base_url)
            self._unreachable = False
        grant = LeaseOut.model_validate_json(response.content).job
        if grant is None:
            return []
        self._lease_s = grant.lease_s
        with self._lock:
            self._grants[grant.job_id] = grant
        return [ClaimedJob(id=grant.job_id, kind=JOB_KIND, target=grant.plugin, target_version=grant.plugin_version,
                           study_uid=grant.study_uid, generation=0, dedupe_key="", payload={},
                           attempt=grant.attempt, max_attempts=grant.max_attempts, timeout_s=grant.timeout_s,
                           owner=owner, requested_by="")]  # fmt: skip

    def heartbeat(self, job: ClaimedJob, *, progress: float | None = None, message: str | None = None) -> bool:
        try:
            self.client.post(f"/{job.id}/heartbeat", HeartbeatIn(worker_id=job.owner, attempt=job.attempt,
                                                                 progress=progress, message=message))  # fmt: skip
        except LeaseLost:
            return False
        return True

    def complete(self, job: ClaimedJob, result: dict[str, Any] | None = None, *,
                 also: Callable[[Connection], None] | None = None) -> None:  # fmt: skip
        """Send the attempt's findings (``result["findings"]``); the archive stores the SR/SEG."""
        if also is not None:
            raise TypeError("an edge worker writes no records of its own")
        try:
            response = self.client.post(f"/{job.id}/complete", CompleteIn(
                worker_id=job.owner, attempt=job.attempt, findings=(result or {})["findings"]))  # fmt: skip
        finally:
            self._forget(job)
        if response.status_code == 422:  # recorded by the archive as a failed attempt
            outcome = OutcomeOut.model_validate_json(response.content)
            log.warning("job %d: the archive refused the findings (%s): %s", job.id, outcome.status, outcome.error)

    def fail(self, job: ClaimedJob, error: str, *, retry: bool = True) -> JobStatus:
        try:
            body = FailIn(worker_id=job.owner, attempt=job.attempt, error=error[:8000] or "failed", retry=retry)
            response = self.client.post(f"/{job.id}/fail", body)
        finally:
            self._forget(job)
        return JobStatus(OutcomeOut.model_validate_json(response.content).status)

    def release(self, job: ClaimedJob, reason: str) -> None:
        try:
            self.client.post(f"/{job.id}/release", ReleaseIn(worker_id=job.owner, attempt=job.attempt,
                                                             reason=reason[:256]))  # fmt: skip
        finally:
            self._forget(job)

    def cancel_claimed(self, job: ClaimedJob, reason: str) -> None:
        """The archive cancels jobs of disabled plugins itself (it leases none); an edge worker that
        must not run a job fails it without a retry."""
        self.fail(job, reason, retry=False)

    def _forget(self, job: ClaimedJob) -> None:
        with self._lock:
            self._grants.pop(job.id, None)
