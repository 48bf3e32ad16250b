"""De-identification per PS3.15 Annex E: the Basic Application Level Confidentiality Profile with the
Retain Longitudinal Temporal Information with Modified Dates Option (PS3.15 E.3.6).

What :func:`deidentify` does to a dataset (recursively, sequences included):

- attributes of PS3.15 Table E.1-1 get their Basic Profile action: removed (X), emptied (Z),
  replaced by a dummy (D) or, for UIDs (U), remapped;
- every other UID is remapped too, except the standard's own (``1.2.840.10008.…``: SOP classes,
  transfer syntaxes, coding schemes), so references between objects stay consistent;
- Patient Name and Patient ID become a pseudonym; every date (DA, and the date part of DT) is
  shifted by a per-patient number of days, so intervals between one patient's studies survive;
- private attributes, curves (50xx) and overlay data and comments (60xx) are removed;
- Patient Identity Removed (0012,0062) = YES, De-identification Method (0012,0063) and its code
  sequence (0012,0064: DCM 113100, 113107) and Longitudinal Temporal Information Modified
  (0028,0303) = MODIFIED are set.

Pseudonyms, UIDs and date shifts come from an HMAC of the archive's secret key and a namespace
(e.g. one benchmark), so they are consistent within the namespace and cannot be reversed or
recomputed by anyone without the key. Pixel data is kept as is: a dataset declaring burned-in
annotation is refused, because the Basic Profile without the Clean Pixel Data Option may not
release it.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import io
from collections.abc import Callable
from dataclasses import dataclass

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from pacs.errors import InvalidDataset

__all__ = [
    "BASIC_PROFILE_ACTIONS",
    "DEIDENTIFICATION_METHOD",
    "Deidentifier",
    "DeidentificationRefused",
    "deidentify_part10",
]

DEIDENTIFICATION_METHOD = "PS3.15 E.1 Basic Profile; Modified Dates Option"
_STANDARD_UID_ROOT = "1.2.840.10008."
_MAX_SHIFT_DAYS = 3650

#: PS3.15 Table E.1-1, Basic Profile column, by keyword: X remove, Z empty, D dummy, U new UID.
#: Dates (DA/DT) are shifted instead of emptied or removed (Modified Dates Option), except the
#: birth and menstrual dates below, which stay removed.
BASIC_PROFILE_ACTIONS: dict[str, str] = {
    "AccessionNumber": "Z", "AcquisitionComments": "X", "AcquisitionContextSequence": "X",
    "AcquisitionDeviceProcessingDescription": "X", "AcquisitionProtocolDescription": "X",
    "ActualHumanPerformersSequence": "X", "AdditionalPatientHistory": "X", "AdmissionID": "X",
    "AdmittingDiagnosesCodeSequence": "X", "AdmittingDiagnosesDescription": "X", "Allergies": "X",
    "Arbitrary": "X", "AuthorObserverSequence": "X", "BranchOfService": "X", "CassetteID": "X",
    "CommentsOnThePerformedProcedureStep": "X", "ConcatenationUID": "U",
    "ConfidentialityConstraintOnPatientDataDescription": "X", "ContentCreatorName": "Z",
    "ContentCreatorIdentificationCodeSequence": "X", "ContextGroupExtensionCreatorUID": "U",
    "ContrastBolusAgent": "D", "ContributionDescription": "X", "CountryOfResidence": "X",
    "CreatorVersionUID": "U", "CurrentPatientLocation": "X", "CustodialOrganizationSequence": "X",
    "DataSetTrailingPadding": "X", "DerivationDescription": "X", "DetectorID": "D", "DeviceSerialNumber": "X",
    "DeviceUID": "U", "DigitalSignatureUID": "X", "DigitalSignaturesSequence": "X",
    "DimensionOrganizationUID": "U", "DischargeDiagnosisDescription": "X", "DistributionAddress": "X",
    "DistributionName": "X", "DoseReferenceUID": "U", "EthnicGroup": "X", "FailedSOPInstanceUIDList": "U",
    "FiducialUID": "U", "FillerOrderNumberImagingServiceRequest": "Z", "FrameComments": "X",
    "FrameOfReferenceUID": "U", "GantryID": "X", "GeneratorID": "X", "GraphicAnnotationSequence": "X",
    "HumanPerformerName": "X", "HumanPerformerOrganization": "X", "IconImageSequence": "X",
    "IdentifyingComments": "X", "ImageComments": "X", "ImagePresentationComments": "X",
    "ImagingServiceRequestComments": "X", "Impressions": "X", "InstanceCoercionDateTime": "X",
    "InstanceCreatorUID": "U", "InstitutionAddress": "X", "InstitutionCodeSequence": "X", "InstitutionName": "X",
    "InstitutionalDepartmentName": "X", "InsurancePlanIdentification": "X",
    "IntendedRecipientsOfResultsIdentificationSequence": "X", "InterpretationApproverSequence": "X",
    "InterpretationAuthor": "X", "InterpretationDiagnosisDescription": "X", "InterpretationIDIssuer": "X",
    "InterpretationRecorder": "X", "InterpretationText": "X", "InterpretationTranscriber": "X",
    "IrradiationEventUID": "U", "IssuerOfAdmissionID": "X", "IssuerOfPatientID": "X",
    "IssuerOfServiceEpisodeID": "X", "LargePaletteColorLookupTableUID": "U", "LastMenstrualDate": "X",
    "MAC": "X", "MediaStorageSOPInstanceUID": "U", "MedicalAlerts": "X", "MedicalRecordLocator": "X",
    "MilitaryRank": "X", "ModifiedAttributesSequence": "X", "ModifiedImageDescription": "X",
    "ModifyingDeviceID": "X", "ModifyingDeviceManufacturer": "X", "NameOfPhysiciansReadingStudy": "X",
    "NamesOfIntendedRecipientsOfResults": "X", "Occupation": "X", "OperatorIdentificationSequence": "X",
    "OperatorsName": "X", "OriginalAttributesSequence": "X", "OrderCallbackPhoneNumber": "X",
    "OrderEnteredBy": "X", "OrderEntererLocation": "X", "OtherPatientIDs": "X", "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X", "ParticipantSequence": "X", "PatientAddress": "X", "PatientComments": "X",
    "PatientState": "X", "PatientTransportArrangements": "X", "PatientAge": "X", "PatientBirthDate": "Z",
    "PatientBirthName": "X", "PatientBirthTime": "X", "PatientInstitutionResidence": "X",
    "PatientInsurancePlanCodeSequence": "X", "PatientMotherBirthName": "X",
    "PatientPrimaryLanguageCodeSequence": "X", "PatientPrimaryLanguageModifierCodeSequence": "X",
    "PatientReligiousPreference": "X", "PatientSex": "Z", "PatientSize": "X", "PatientWeight": "X",
    "PatientTelephoneNumbers": "X", "PerformedLocation": "X", "PerformedProcedureStepDescription": "X",
    "PerformedProcedureStepID": "X", "PerformedStationAETitle": "X",
    "PerformedStationGeographicLocationCodeSequence": "X", "PerformedStationName": "X",
    "PerformedStationNameCodeSequence": "X", "PerformingPhysicianIdentificationSequence": "X",
    "PerformingPhysicianName": "X", "PersonAddress": "X", "PersonIdentificationCodeSequence": "X",
    "PersonName": "D", "PersonTelephoneNumbers": "X", "PhysicianApprovingInterpretation": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X", "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X", "PlacerOrderNumberImagingServiceRequest": "Z",
    "PlateID": "X", "PreMedication": "X", "PregnancyStatus": "X", "ProtocolName": "X",
    "ReasonForTheImagingServiceRequest": "X", "ReasonForStudy": "X", "ReferencedDigitalSignatureSequence": "X",
    "ReferencedFrameOfReferenceUID": "U", "ReferencedPatientAliasSequence": "X",
    "ReferencedPatientSequence": "X", "ReferencedPerformedProcedureStepSequence": "X",
    "ReferencedSOPInstanceMACSequence": "X", "ReferencedSOPInstanceUID": "U",
    "ReferencedSOPInstanceUIDInFile": "U", "ReferencedStudySequence": "X", "ReferringPhysicianAddress": "X",
    "ReferringPhysicianIdentificationSequence": "X", "ReferringPhysicianName": "Z",
    "ReferringPhysicianTelephoneNumbers": "X", "RegionOfResidence": "X", "RelatedFrameOfReferenceUID": "U",
    "RequestAttributesSequence": "X", "RequestedContrastAgent": "X", "RequestedProcedureComments": "X",
    "RequestedProcedureDescription": "X", "RequestedProcedureID": "X", "RequestedProcedureLocation": "X",
    "RequestingPhysician": "X", "RequestingService": "X", "ResponsibleOrganization": "X",
    "ResponsiblePerson": "X", "ResultsComments": "X", "ResultsDistributionListSequence": "X",
    "ResultsIDIssuer": "X", "ReviewerName": "X", "ScheduledHumanPerformersSequence": "X",
    "ScheduledPatientInstitutionResidence": "X", "ScheduledPerformingPhysicianIdentificationSequence": "X",
    "ScheduledPerformingPhysicianName": "X", "ScheduledProcedureStepDescription": "X",
    "ScheduledProcedureStepLocation": "X", "ScheduledStationAETitle": "X",
    "ScheduledStationGeographicLocationCodeSequence": "X", "ScheduledStationName": "X",
    "ScheduledStationNameCodeSequence": "X", "ScheduledStudyLocation": "X", "ScheduledStudyLocationAETitle": "X",
    "SeriesDescription": "X", "SeriesInstanceUID": "U", "ServiceEpisodeDescription": "X",
    "ServiceEpisodeID": "X", "SmokingStatus": "X", "SOPInstanceUID": "U", "SourceApplicationEntityTitle": "X",
    "SpecialNeeds": "X", "StationName": "X", "StorageMediaFileSetUID": "U", "StudyComments": "X",
    "StudyDescription": "X", "StudyID": "Z", "StudyIDIssuer": "X", "StudyInstanceUID": "U",
    "SynchronizationFrameOfReferenceUID": "U", "TemplateExtensionCreatorUID": "U",
    "TemplateExtensionOrganizationUID": "U", "TextComments": "X", "TextString": "X",
    "TimezoneOffsetFromUTC": "X", "TopicAuthor": "X", "TopicKeywords": "X", "TopicSubject": "X",
    "TopicTitle": "X", "TransactionUID": "U", "UID": "U", "VerifyingObserverIdentificationCodeSequence": "Z",
    "VerifyingObserverName": "D", "VerifyingObserverSequence": "X", "VerifyingOrganization": "X",
    "VisitComments": "X",
}  # fmt: skip

_DUMMY_BY_VR = {"PN": "ANONYMOUS", "LO": "ANONYMOUS", "SH": "ANONYMOUS", "CS": "ANONYMOUS", "LT": "ANONYMOUS"}


class DeidentificationRefused(InvalidDataset):
    """The dataset may not be released under the Basic Profile as it is (e.g. burned-in annotation)."""


@dataclass(frozen=True, slots=True)
class Pseudonym:
    patient_id: str
    patient_name: str
    shift_days: int


class Deidentifier:
    """De-identifies datasets consistently within one ``namespace`` (e.g. ``"benchmark-3/dev"``)."""

    def __init__(self, key: bytes, namespace: str) -> None:
        self._key = key
        self.namespace = namespace

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{self.namespace}\x1f{kind}\x1f{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The replacement of ``original``: a "2.25." UID (PS3.5 B.2) from 128 bits of the HMAC."""
        if not original or original.startswith(_STANDARD_UID_ROOT):
            return original
        return f"2.25.{int.from_bytes(self._digest('uid', original)[:16], 'big')}"

    def pseudonym(self, patient_id: str, issuer: str = "") -> Pseudonym:
        """The replacement identity of one patient and the days by which the patient's dates move back."""
        digest = self._digest("patient", f"{patient_id}\x1e{issuer}")
        tag = digest[:6].hex().upper()
        shift = 1 + int.from_bytes(digest[6:10], "big") % _MAX_SHIFT_DAYS
        return Pseudonym(f"CFANON-{tag}", f"ANONYMOUS^{tag}", shift)

    # --- the profile ---------------------------------------------------------------------------

    def deidentify(self, ds: Dataset) -> Dataset:
        """A de-identified copy of ``ds`` (the original is not modified)."""
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            raise DeidentificationRefused("the image declares burned-in annotation; it cannot be released "
                                          "without cleaning the pixel data")  # fmt: skip
        patient = self.pseudonym(str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", "")))
        out = copy.deepcopy(ds)
        self._clean(out, patient.shift_days)
        out.PatientID = patient.patient_id
        out.PatientName = patient.patient_name
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = DEIDENTIFICATION_METHOD
        out.DeidentificationMethodCodeSequence = Sequence([
            _code("113100", "DCM", "Basic Application Confidentiality Profile"),
            _code("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option"),
        ])  # fmt: skip
        out.LongitudinalTemporalInformationModified = "MODIFIED"
        if "SpecificCharacterSet" not in out:
            out.SpecificCharacterSet = "ISO_IR 192"
        meta = FileMetaDataset()
        original_meta = getattr(ds, "file_meta", None)
        meta.MediaStorageSOPClassUID = out.SOPClassUID
        meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        meta.TransferSyntaxUID = (original_meta.TransferSyntaxUID if original_meta is not None
                                  and "TransferSyntaxUID" in original_meta else pydicom.uid.ExplicitVRLittleEndian)
        out.file_meta = meta
        return out

    def _clean(self, ds: Dataset, shift_days: int) -> None:
        for elem in list(ds):
            action = _action(elem)
            if action == "X":
                del ds[elem.tag]
            elif action == "Z":
                elem.value = [] if elem.VR == "SQ" else None
            elif action == "D":
                elem.value = _DUMMY_BY_VR.get(elem.VR) if elem.VR != "SQ" else []
            elif elem.VR == "SQ":
                for item in elem.value or []:
                    self._clean(item, shift_days)
            elif elem.VR == "UI" and elem.value not in (None, ""):
                elem.value = _map(elem.value, self.uid)
            elif elem.VR in ("DA", "DT") and elem.value not in (None, ""):
                vr = str(elem.VR)
                elem.value = _map(elem.value, lambda v, vr=vr: shift_date(v, shift_days, vr))  # type: ignore[misc]


def _action(elem: DataElement) -> str:
    tag = BaseTag(elem.tag)
    if tag.is_private:
        return "X"
    group = tag.group
    if 0x5000 <= group <= 0x50FF or (0x6000 <= group <= 0x60FF and tag.element in (0x3000, 0x4000)):
        return "X"  # curves; overlay data and comments
    keyword = elem.keyword
    action = BASIC_PROFILE_ACTIONS.get(keyword, "K")
    if action in ("Z", "X") and elem.VR in ("DA", "DT") and keyword not in ("PatientBirthDate", "LastMenstrualDate"):
        return "K"  # Modified Dates Option: shifted below
    return "U" if action == "U" else action


def _map(value: object, fn: Callable[[str], str]) -> object:
    if isinstance(value, list | pydicom.multival.MultiValue):
        return [fn(str(v)) for v in value]
    return fn(str(value))


def shift_date(value: str, days: int, vr: str = "DA") -> str:
    """``value`` (DA ``YYYYMMDD`` or DT ``YYYYMMDDhhmmss…``) moved ``days`` back; unparsable values become empty."""
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return ""
    try:
        moved = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8])) - dt.timedelta(days=days)
    except ValueError:
        return ""
    return moved.strftime("%Y%m%d") + (text[8:] if vr == "DT" else "")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def deidentify_part10(data: bytes, deidentifier: Deidentifier) -> tuple[bytes, Dataset]:
    """De-identify Part 10 bytes; the new bytes and the de-identified dataset (pixels included)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:
        raise InvalidDataset(f"the object cannot be read for de-identification: {exc}") from exc
    out = deidentifier.deidentify(ds)
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), out
