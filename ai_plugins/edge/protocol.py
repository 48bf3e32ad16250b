"""The edge job API's request and response bodies (``/api/edge/jobs/…``), shared by the archive's
routes and the edge worker's client so the two cannot drift apart."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ai_plugins.sandbox.limits import Limits
from ai_plugins.sdk import SeriesInfo

WORKER_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
SHA256 = r"^[0-9a-f]{64}$"


class OfferedPlugin(BaseModel):
    """A plugin version installed on the edge worker, which it offers to run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)


class LeaseIn(BaseModel):
    """Ask for one job of the offered plugins. ``worker_id`` names the asking thread on the edge machine
    (the lease's owner is the edge worker's name and this)."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str = Field(pattern=WORKER_ID)
    plugins: list[OfferedPlugin] = Field(max_length=200)
    packages: bool = Field(default=False, description="the worker runs admitted algorithm packages in the sandbox")


class SeriesOut(BaseModel):
    """One input series of the job's study, as the archive's own workers list it (plugin output left out)."""

    series_uid: str
    modality: str
    n_instances: int
    series_number: int | None = None
    description: str = ""
    body_part: str = ""
    sop_class_uids: list[str] = Field(default_factory=list)
    n_frames: int | None = None

    @classmethod
    def of(cls, info: SeriesInfo) -> SeriesOut:
        return cls(series_uid=info.series_uid, modality=info.modality, n_instances=info.n_instances,
                   series_number=info.series_number, description=info.description, body_part=info.body_part,
                   sop_class_uids=sorted(info.sop_class_uids), n_frames=info.n_frames)  # fmt: skip

    def info(self) -> SeriesInfo:
        return SeriesInfo(series_uid=self.series_uid, modality=self.modality, n_instances=self.n_instances,
                          series_number=self.series_number, description=self.description, body_part=self.body_part,
                          sop_class_uids=frozenset(self.sop_class_uids), n_frames=self.n_frames)  # fmt: skip


class PackageGrantOut(BaseModel):
    """The admitted algorithm package a leased job runs: the SHA-256 of its file (fetched from
    ``/api/edge/packages/{sha256}`` unless the worker has its environment already) and what one
    case may use, as the archive caps it."""

    sha256: str = Field(pattern=SHA256)
    size: int
    limits: Limits


class JobGrantOut(BaseModel):
    """A leased job: what to run on which study, the token that reads it over DICOMweb, and the lease."""

    job_id: int
    attempt: int
    max_attempts: int
    plugin: str
    plugin_version: str
    study_uid: str
    timeout_s: float
    lease_s: float
    token: str
    token_expires_at: datetime
    series: list[SeriesOut]
    package: PackageGrantOut | None = None  # set for a job of an admitted package


class LeaseOut(BaseModel):
    """The answer to a lease request: a job, or ``null`` when there is none for this worker now."""

    job: JobGrantOut | None = None


class HeldIn(BaseModel):
    """Names the lease a request is about: the asking thread and the attempt it holds."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str = Field(pattern=WORKER_ID)
    attempt: int = Field(ge=1)


class HeartbeatIn(HeldIn):
    progress: float | None = Field(default=None, ge=0, le=1)
    message: str | None = Field(default=None, max_length=256)


class CompleteIn(HeldIn):
    """The attempt's findings (the SDK's findings JSON); the archive writes the SR/SEG of them."""

    findings: dict[str, Any]


class FailIn(HeldIn):
    error: str = Field(min_length=1, max_length=8000)
    retry: bool = True


class ReleaseIn(HeldIn):
    reason: str = Field(default="the edge worker stopped", max_length=256)


class OutcomeOut(BaseModel):
    """The job's state after the request (``succeeded``, ``retrying``, ``failed`` …) and, for a
    completion, the objects the archive stored."""

    status: str
    objects: list[dict[str, str]] = Field(default_factory=list)
    error: str = ""
