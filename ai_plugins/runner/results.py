"""Findings → the DICOM objects a job stores (SR, and SEG when there are masks), with stable UIDs.

The UIDs of a job's objects derive from the job's key, so a job retried after its worker died
produces the very same SOP Instance UIDs: the archive keeps one copy, however many attempts ran
(exactly one SR per job). A re-run is another job, with another key: a new SR next to the old.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

from pydicom.dataset import Dataset

from ai_plugins.sdk import Findings, PluginInfo, StudyInput

_NAMESPACE = uuid.UUID("6f1c3a52-3d0e-5b4c-9a57-2f6f0e0c1a10")
SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def job_uid(job_key: str, part: str) -> str:
    """A "2.25." UID (PS3.5 B.2) from a name-based UUID of the job key and the object's role."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, f'{job_key}/{part}').int}"


@dataclass(frozen=True, slots=True)
class ResultUids:
    """The UIDs of everything one job may store, derived from the job's key."""

    job_key: str

    @classmethod
    def for_job(cls, job_key: str) -> ResultUids:
        return cls(job_key)

    @property
    def sr_series(self) -> str:
        return job_uid(self.job_key, "sr-series")

    @property
    def sr_instance(self) -> str:
        return job_uid(self.job_key, "sr")

    def seg_series(self, n: int) -> str:
        return job_uid(self.job_key, f"seg-series-{n}")

    def seg_instance(self, n: int) -> str:
        return job_uid(self.job_key, f"seg-{n}")


@dataclass(frozen=True, slots=True)
class ResultObject:
    """One object to store: its kind, identity and Part 10 bytes."""

    kind: str  # "SR" | "SEG"
    sop_uid: str
    series_uid: str
    sop_class_uid: str
    data: bytes


def kind_of(sop_class_uid: str) -> str:
    if sop_class_uid.startswith(SR_CLASS_PREFIX):
        return "SR"
    if sop_class_uid == SEG_CLASS:
        return "SEG"
    return "OTHER"


def to_part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _object(ds: Dataset) -> ResultObject:
    sop_class = str(ds.SOPClassUID)
    return ResultObject(kind_of(sop_class), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), sop_class,
                        to_part10(ds))  # fmt: skip


def build_result_objects(findings: Findings, study: StudyInput, info: PluginInfo,
                         uids: ResultUids) -> list[ResultObject]:  # fmt: skip
    """The SR (always: "nothing found" is a result too) and one SEG per segmentation, with the job's UIDs."""
    from ai_plugins.sr import SEG_SERIES_NUMBER, build_measurement_report, build_segmentation, evidence_for

    objects = [_object(build_measurement_report(findings, evidence_for(findings, study), info,
                                                series_instance_uid=uids.sr_series,
                                                sop_instance_uid=uids.sr_instance))]  # fmt: skip
    for n, segmentation in enumerate(findings.segmentations):
        volume = study.get_series(segmentation.series_uid).volume
        seg = build_segmentation(
            segmentation,
            volume,
            info,
            series_instance_uid=uids.seg_series(n),
            sop_instance_uid=uids.seg_instance(n),
            series_number=SEG_SERIES_NUMBER + n,
        )
        objects.append(_object(seg))
    return objects
