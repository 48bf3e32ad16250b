"""Pulling a study another archive shared with this hospital into this archive (``cloudfilm import-share``).

A clinician share (issue 13) gives a DICOMweb URL and a bearer token that reads one study. The
instances this archive lacks are retrieved one by one as the other archive stores them
(:mod:`pacs.wado_client`) and go through the one ingest path, so each arrives byte for byte, is
indexed like any other, and is counted as stored, already here or rejected. Instances already in
the index are not fetched again: a second run transfers nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from sqlalchemy import Engine, select

from pacs.access import DEFAULT_PARTITION
from pacs.index.models import Instance
from pacs.ingest import IngestService, Outcome
from pacs.wado_client import DicomwebClient, DicomwebError, RemoteInstance, ShareLocation, SpooledInstance

_LOOKUP_CHUNK = 500
_IDENTITY = [Tag(0x0020, 0x000D), Tag(0x0008, 0x0018)]  # Study and SOP Instance UIDs


@dataclass(slots=True)
class ImportReport:
    """What one run did with each instance of the shared study."""

    study_uid: str
    listed: int = 0  # instances the other archive lists for the study
    stored: int = 0
    already_here: int = 0  # in this archive before (not fetched), or identical when fetched
    kept_existing: list[str] = field(default_factory=list)  # same SOP Instance UID, other bytes: ours kept
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (SOP Instance UID, reason)

    @property
    def complete(self) -> bool:
        return not self.rejected


def present_sop_uids(engine: Engine, sop_uids: Iterable[str], partition: int = DEFAULT_PARTITION) -> set[str]:
    """Which of ``sop_uids`` this archive's index already holds in ``partition`` (the one imported into)."""
    wanted = sorted(set(sop_uids))
    found: set[str] = set()
    with engine.connect() as conn:
        for i in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[i:i + _LOOKUP_CHUNK]
            found.update(conn.execute(select(Instance.sop_uid).where(Instance.partition_fk == partition,
                                                                 Instance.sop_uid.in_(chunk))).scalars())
    return found


def shared_study(client: DicomwebClient, location: ShareLocation) -> str:
    """The study the URL names, else the one study the token sees."""
    if location.study_uid:
        return location.study_uid
    studies = client.studies()
    if not studies:
        raise DicomwebError("the token sees no study at this URL")
    if len(studies) > 1:
        raise DicomwebError(f"the token sees {len(studies)} studies; give the study's URL "
                            f"({location.base_url}/studies/{{StudyInstanceUID}})")
    return studies[0]


def import_share(ingest: IngestService, engine: Engine, url: str, token: str, *, jobs: int = 4,
                 spool_dir: Path | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ImportReport:  # fmt: skip
    """Import the study shared at ``url`` with ``token``. Raises :class:`DicomwebError` when the other
    archive cannot be reached or refuses the token; a single instance that fails is reported."""
    location = ShareLocation.parse(url)
    client = DicomwebClient(location.base_url, token)
    study_uid = shared_study(client, location)
    remote = client.instances(study_uid)
    if not remote:
        raise DicomwebError(f"the other archive lists no instance in study {study_uid}")
    report = ImportReport(study_uid, listed=len(remote))
    here = present_sop_uids(engine, (r.sop_uid for r in remote))
    report.already_here = len(here)
    missing = [r for r in remote if r.sop_uid not in here]
    done = len(here)
    if progress:
        progress(done, len(remote))
    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="import-share") as pool:
        for instance, outcome in zip(missing, pool.map(lambda r: _pull(client, ingest, r, spool_dir), missing),
                                     strict=True):  # fmt: skip
            _count(report, instance, outcome)
            done += 1
            if progress:
                progress(done, len(remote))
    return report


def _pull(client: DicomwebClient, ingest: IngestService, instance: RemoteInstance,
          spool_dir: Path | None) -> tuple[Outcome | None, str]:  # fmt: skip
    """Retrieve and ingest one instance: the ingest outcome, or None and why it was not stored."""
    try:
        spooled = client.retrieve(instance, spool_dir)
    except DicomwebError as exc:
        if exc.status in (401, 403):
            raise  # the token no longer opens the study: stop, whatever else is pending
        return None, str(exc)
    try:
        mismatch = _identity_mismatch(spooled)
        if mismatch:
            return None, mismatch
        result = ingest.store_source(spooled.source())
        return result.outcome, result.reason
    finally:
        spooled.discard()


def _identity_mismatch(spooled: SpooledInstance) -> str:
    """Why the object received is not the instance asked for (another study or SOP instance), or ""."""
    expected = spooled.instance
    try:
        with spooled.source().open() as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=_IDENTITY)
    except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
        return f"the other archive sent no readable DICOM object: {exc}"
    study, sop = str(ds.get("StudyInstanceUID", "")), str(ds.get("SOPInstanceUID", ""))
    if (study, sop) != (expected.study_uid, expected.sop_uid):
        return f"the other archive sent instance {sop or '?'} of study {study or '?'} instead"
    return ""


def _count(report: ImportReport, instance: RemoteInstance, outcome: tuple[Outcome | None, str]) -> None:
    result, reason = outcome
    if result in (Outcome.STORED, Outcome.REPLACED):
        report.stored += 1
    elif result is Outcome.DUPLICATE:
        report.already_here += 1
    elif result is Outcome.KEPT_EXISTING:
        report.already_here += 1
        report.kept_existing.append(instance.sop_uid)
    else:
        report.rejected.append((instance.sop_uid, reason or "rejected"))
