"""A physician's review of one AI finding as DICOM: a TID 1500 Comprehensive 3D SR that references the AI's SR.

The document holds one measurement group: the finding as the physician reviewed it (label, region
on the image it is drawn on, diameter) with a qualitative evaluation saying accepted, edited or
rejected. Its observer is the physician (a person, TID 1002), it is complete and verified by that
physician (PS3.3 C.17.2: Verification Flag VERIFIED, Verifying Observer Sequence), and its Current
Requested Procedure Evidence lists the AI's SR and the image, which is how the review references
the report it reviews. Review documents of a study share one series (number 9200).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.sr.coding import Code as DicomCode

from ai_plugins.sdk import Code, codes
from ai_plugins.sr.tid1500 import MANUFACTURER, derived_uid, procedure_reported, to_dicom_code
from pacs.names import person_name

__all__ = ["REVIEW_SERIES_NUMBER", "ReviewedFinding", "build_review_document", "person_name"]

REVIEW_SERIES_NUMBER = 9200
Decision = Literal["accepted", "rejected", "edited"]
_SCHEME = "99CLOUDFILM"  # the archive's local coding scheme (PS3.16 8.2: private scheme designators)
REVIEW_CONCEPT = DicomCode("REVIEW", _SCHEME, "Physician review of AI finding")
DECISION_CODES: dict[str, DicomCode] = {
    "accepted": DicomCode("ACCEPTED", _SCHEME, "Accepted"),
    "edited": DicomCode("EDITED", _SCHEME, "Accepted with changes"),
    "rejected": DicomCode("REJECTED", _SCHEME, "Rejected"),
}


@dataclass(frozen=True, slots=True)
class ReviewedFinding:
    """The finding as the physician left it, on the image it is drawn on (pixel coordinates)."""

    decision: Decision
    tracking_id: str
    code: Code  # the AI's finding type, or a local code carrying the physician's label
    image: Dataset | None  # the image the region lies on (None: a study-level finding)
    frame: int | None
    graphic_type: Literal["POINT", "CIRCLE", "POLYLINE"] | None
    points: Sequence[tuple[float, float]]
    diameter_mm: float | None


def label_code(label: str) -> Code:
    """A local code whose meaning is a label a physician typed (no standard code says it)."""
    return Code(value=derived_uid("label", label.casefold())[5:21], scheme=_SCHEME, meaning=label[:64])


def _group(finding: ReviewedFinding) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | \
        hd.sr.MeasurementsAndQualitativeEvaluations:  # fmt: skip
    tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=finding.tracking_id)
    evaluation = hd.sr.QualitativeEvaluation(REVIEW_CONCEPT, DECISION_CODES[finding.decision])
    image = finding.image
    source = None if image is None else [hd.sr.SourceImageForMeasurement(str(image.SOPClassUID),
                                                                            str(image.SOPInstanceUID))]  # fmt: skip
    measurements = None
    if finding.diameter_mm is not None:
        measurements = [hd.sr.Measurement(name=to_dicom_code(codes.DIAMETER), value=float(finding.diameter_mm),
                                          unit=to_dicom_code(codes.UCUM_MM), referenced_images=source)]  # fmt: skip
    if image is None or finding.graphic_type is None or not finding.points:
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, finding_type=to_dicom_code(finding.code), measurements=measurements,
            qualitative_evaluations=[evaluation],
        )  # fmt: skip
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues[finding.graphic_type],
        graphic_data=np.array(finding.points, dtype=float),
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=str(image.SOPClassUID), referenced_sop_instance_uid=str(image.SOPInstanceUID),
            referenced_frame_numbers=[finding.frame] if finding.frame and int(image.get("NumberOfFrames", 1)) > 1
            else None),
    )  # fmt: skip
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_region=region, finding_type=to_dicom_code(finding.code),
        measurements=measurements, qualitative_evaluations=[evaluation],
    )  # fmt: skip


def build_review_document(finding: ReviewedFinding, ai_report: Dataset, *, reviewer: str,
                          institution_name: str | None = None) -> hd.sr.Comprehensive3DSR:  # fmt: skip
    """The review of one finding of ``ai_report`` by ``reviewer`` (a name for people), verified by them."""
    evidence = [ai_report] + ([finding.image] if finding.image is not None else [])
    observer = hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=person_name(reviewer)),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=procedure_reported([finding.image] if finding.image is not None else []),
        imaging_measurements=[_group(finding)],
        title=DicomCode("126000", "DCM", "Imaging Measurement Report"),
    )
    study = str(ai_report.StudyInstanceUID)
    institution = institution_name or ai_report.get("InstitutionName") or None
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=derived_uid("review-series", study),
        series_number=REVIEW_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="cloudfilm AI review",
        institution_name=str(institution) if institution else None,
        series_description="Physician review of AI findings",
        is_complete=True,
        is_final=True,
        is_verified=True,
        verifying_observer_name=person_name(reviewer),
        verifying_organization=str(institution or MANUFACTURER),
    )
