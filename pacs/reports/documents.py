"""A signed report as DICOM: an Enhanced SR and, when images are cited, a Key Object Selection.

The SR (PS3.3 A.35.2) holds the report as a titled container of sections (each a CONTAINER with
its TEXT), the key images as IMAGE items and the cited AI findings as TEXT with a COMPOSITE
reference to the physician's review SR of each. It is complete and verified (PS3.3 C.17.2:
Completion Flag COMPLETE, Verification Flag VERIFIED, Verifying Observer Sequence with the signer
and the time of signing); an amendment lists the SR it replaces in the Predecessor Documents
Sequence. Every version of a study's report documents lives in one series per kind (SR, PDF, KOS),
its instance number the version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.sr.coding import Code

from pacs.names import person_name
from pacs.reports.types import CitedFinding, ReportSections
from pacs.uids import derived_uid

MANUFACTURER = "cloudfilm"
SR_SERIES_NUMBER, PDF_SERIES_NUMBER, KOS_SERIES_NUMBER = 9300, 9301, 9302

#: Concept names (LOINC and DCM, as TID 2000 Basic Diagnostic Imaging Report names its sections).
REPORT_TITLE = Code("18748-4", "LN", "Diagnostic imaging report")
SECTION_CODES: dict[str, tuple[Code, Code]] = {  # section → (container, its text)
    "clinical_information": (Code("55752-0", "LN", "Clinical information"), Code("121106", "DCM", "Comment")),
    "technique": (Code("55111-9", "LN", "Current imaging procedure description"), Code("121065", "DCM",
                                                                                      "Procedure Description")),
    "findings": (Code("59776-5", "LN", "Procedure Findings"), Code("121071", "DCM", "Finding")),
    "impression": (Code("19005-8", "LN", "Radiology Report Impression"), Code("121073", "DCM", "Impression")),
}
KEY_IMAGE = Code("121080", "DCM", "Best illustration of finding")
SOURCE_OF_FINDING = Code("121112", "DCM", "Source of Measurement")


@dataclass(frozen=True, slots=True)
class SignedContent:
    """Everything the documents of one signed version say."""

    report_id: int
    version: int
    title: str
    sections: ReportSections
    signer_name: str  # as people write it: "Jane Doe"
    signed_at: datetime
    institution: str
    study: Dataset  # an instance header of the study: patient and study attributes
    key_images: Sequence[Dataset]  # headers of the cited images
    cited: Sequence[tuple[CitedFinding, Dataset]]  # each cited finding with its review SR's header
    predecessor: Dataset | None  # the SR this version amends


def series_uid(study_uid: str, kind: str) -> str:
    return derived_uid("report-series", kind, study_uid)


def _da_tm(moment: datetime) -> tuple[str, str, str]:
    local = moment.astimezone()
    return local.strftime("%Y%m%d"), local.strftime("%H%M%S"), local.strftime("%Y%m%d%H%M%S%z")


def _patient_source(study: Dataset) -> Dataset:
    """The study header with the Type 2 patient and study attributes highdicom copies present."""
    source = Dataset()
    source.update(study)
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                    "StudyDate", "StudyTime", "ReferringPhysicianName"):  # fmt: skip
        if keyword not in source:
            setattr(source, keyword, "")
    return source


def _observer(name: str) -> hd.sr.ObserverContext:
    return hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=person_name(name)),
    )


def _content(content: SignedContent) -> hd.sr.ContainerContentItem:
    rel = hd.sr.RelationshipTypeValues
    root = hd.sr.ContainerContentItem(name=REPORT_TITLE, template_id=None)
    items: list[hd.sr.ContentItem] = list(_observer(content.signer_name))  # type: ignore[arg-type]
    for name, text in content.sections.model_dump().items():
        container_code, text_code = SECTION_CODES[name]
        children: list[hd.sr.ContentItem] = []
        if text:
            children.append(hd.sr.TextContentItem(name=text_code, value=text, relationship_type=rel.CONTAINS))
        if name == "findings":
            for image in content.key_images:
                children.append(hd.sr.ImageContentItem(
                    name=KEY_IMAGE, referenced_sop_class_uid=str(image.SOPClassUID),
                    referenced_sop_instance_uid=str(image.SOPInstanceUID), relationship_type=rel.CONTAINS))
            for finding, review in content.cited:
                item = hd.sr.TextContentItem(name=text_code, value=finding.sentence(), relationship_type=rel.CONTAINS)
                item.ContentSequence = hd.sr.ContentSequence([hd.sr.CompositeContentItem(
                    name=SOURCE_OF_FINDING, referenced_sop_class_uid=str(review.SOPClassUID),
                    referenced_sop_instance_uid=str(review.SOPInstanceUID), relationship_type=rel.INFERRED_FROM)])
                children.append(item)
        if not children:
            continue
        section = hd.sr.ContainerContentItem(name=container_code, relationship_type=rel.CONTAINS)
        section.ContentSequence = hd.sr.ContentSequence(children)
        items.append(section)
    root.ContentSequence = hd.sr.ContentSequence(items, is_root=False)
    return root


def _stamp(ds: Dataset, content: SignedContent) -> None:
    """Content and verification date/time are the moment of signing, not of building the object."""
    date, time, dt = _da_tm(content.signed_at)
    ds.ContentDate, ds.ContentTime = date, time
    if "VerifyingObserverSequence" in ds:
        ds.VerifyingObserverSequence[0].VerificationDateTime = dt


def build_sr(content: SignedContent) -> hd.sr.EnhancedSR:
    """The report as a verified Enhanced SR in the study's report series."""
    study_uid = str(content.study.StudyInstanceUID)
    references = [*content.key_images, *(review for _, review in content.cited)]
    evidence = references or [content.study]  # the first also gives the patient and study attributes
    evidence = [_patient_source(evidence[0]), *evidence[1:]]
    sr = hd.sr.EnhancedSR(
        evidence=evidence,
        content=_content(content),
        series_instance_uid=series_uid(study_uid, "sr"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=content.version,
        manufacturer=MANUFACTURER,
        institution_name=content.institution or None,
        is_complete=True,
        is_final=True,
        is_verified=True,
        verifying_observer_name=person_name(content.signer_name),
        verifying_organization=content.institution or MANUFACTURER,
        previous_versions=[content.predecessor] if content.predecessor is not None else None,
        series_description="Physician report",
    )
    if not references:  # only referenced instances are evidence (PS3.3 C.17.2.1: Type 1C)
        del sr.CurrentRequestedProcedureEvidenceSequence
    sr.StudyInstanceUID = study_uid
    _stamp(sr, content)
    return sr


def build_kos(content: SignedContent) -> hd.ko.KeyObjectSelectionDocument:
    """The cited images as a Key Object Selection ("Of Interest", PS3.16 CID 7010) by the signer."""
    study_uid = str(content.study.StudyInstanceUID)
    images = list(content.key_images)
    selection = hd.ko.KeyObjectSelection(
        document_title=dcm_codes.DCM.OfInterest, referenced_objects=images,
        observer_person_context=_observer(content.signer_name),
        description=f"Key images of report version {content.version}",
    )  # fmt: skip
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=[_patient_source(images[0]), *images[1:]],
        content=selection,
        series_instance_uid=series_uid(study_uid, "kos"),
        series_number=KOS_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=content.version,
        manufacturer=MANUFACTURER,
        institution_name=content.institution or None,
        series_description="Key images (physician report)",
    )
    _stamp(kos, content)
    return kos
