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
    """The UIDs of everything one job may store."""

    sr_series: str
    sr_instance: str
    seg_series: str
    seg_instance: str

    @classmethod
    def for_job(cls, job_key: str) -> ResultUids:
        return cls(job_uid(job_key, "sr-series"), job_uid(job_key, "sr"), job_uid(job_key, "seg-series"),
                   job_uid(job_key, "seg"))  # fmt: skip


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


def build_result_objects(
    findings: Findings, study: StudyInput, info: PluginInfo, uids: ResultUids
) -> list[ResultObject]:
    """The SR (always: even "nothing found" is a result) and the SEG (when there are masks)."""
    from ai_plugins.sr import write_seg, write_sr

    objects: list[ResultObject] = []
    for segmentation in findings.segmentations:
        seg = write_seg(segmentation, study, info, series_uid=uids.seg_series, sop_uid=uids.seg_instance)
        objects.append(_object(seg))
        break  # one SEG per job: a plugin segments the series it analysed
    sr = write_sr(findings, study, info, series_uid=uids.sr_series, sop_uid=uids.sr_instance)
    objects.append(_object(sr))
    return objects
