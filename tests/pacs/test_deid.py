"""De-identification per PS3.15 Annex E (Basic Profile, Modified Dates Option)."""

from __future__ import annotations

import datetime as dt
import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pacs.deid import DEIDENTIFICATION_METHOD, DeidentificationRefused, Deidentifier, deidentify_part10, shift_date
from tests.factories import PATIENTS, make_ct_case, to_bytes

KEY = b"deid-test-key-0123456789"


def _decorated(ds: Dataset) -> Dataset:
    """The factory's CT slice plus attributes the profile must handle."""
    ds.OtherPatientIDs = "OLD-1234"
    ds.PatientAddress = "1 Main Street"
    ds.InstitutionAddress = "Hospital Road 5"
    ds.add_new(0x00091001, "LO", "private vendor data")
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.99.1"
    ref.OperatorsName = "Nested^Operator"  # nested in a kept sequence: removed there too
    ds.ReferencedImageSequence = Sequence([ref])
    request = Dataset()
    request.RequestedProcedureID = "RP-77"
    ds.RequestAttributesSequence = Sequence([request])
    ds.AcquisitionDateTime = "20240115093012.5"
    return ds


def test_basic_profile_removes_replaces_and_shifts() -> None:
    case = make_ct_case(PATIENTS[1], n_slices=2, rows=16, cols=16, seed=31)
    original = _decorated(case.datasets[0])
    deid = Deidentifier(KEY, "benchmark-1/dev")
    data, out = deidentify_part10(to_bytes(original), deid)
    back = pydicom.dcmread(io.BytesIO(data))
    text = data.decode("latin-1")
    for leak in ("Müller", "CF-0002", "KLINIKUM-NORD", "OLD-1234", "Main Street", "Hospital Road", "Tech^Terry",
                 "Curie^Marie", "Cloudfilm General Hospital", "private vendor data", "Nested^Operator", "RP-77",
                 str(original.StudyInstanceUID), str(original.SOPInstanceUID), original.AccessionNumber):  # fmt: skip
        assert leak.encode("utf-8").decode("latin-1") not in text, leak
    assert back.PatientIdentityRemoved == "YES"
    assert back.DeidentificationMethod == DEIDENTIFICATION_METHOD
    assert [c.CodeValue for c in back.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    assert back.LongitudinalTemporalInformationModified == "MODIFIED"
    assert str(back.PatientID).startswith("CFANON-") and str(back.PatientName).startswith("ANONYMOUS^")
    assert back.PatientBirthDate == "" and back.PatientSex == "" and "PatientAge" not in back
    assert back.AccessionNumber == "" and back.StudyID == "" and "IssuerOfPatientID" not in back
    assert "InstitutionName" not in back and "OperatorsName" not in back and "SeriesDescription" not in back
    assert not any(elem.tag.is_private for elem in back) and (0x6000, 0x3000) not in back
    assert "RequestAttributesSequence" not in back and "OperatorsName" not in back.ReferencedImageSequence[0]
    # UIDs: remapped consistently; the standard's own are kept
    assert back.StudyInstanceUID == deid.uid(original.StudyInstanceUID) != original.StudyInstanceUID
    assert back.FrameOfReferenceUID == deid.uid(original.FrameOfReferenceUID)
    assert back.SOPClassUID == original.SOPClassUID
    assert back.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    ref = back.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == deid.uid("1.2.826.0.1.3680043.10.99.1")
    assert ref.ReferencedSOPClassUID == original.SOPClassUID
    # dates move back by the patient's shift, times stay; pixels are untouched
    shift = deid.pseudonym(original.PatientID, original.IssuerOfPatientID).shift_days
    assert back.StudyDate == shift_date(original.StudyDate, shift) != original.StudyDate
    assert back.AcquisitionDateTime == shift_date("20240115093012.5", shift, "DT")
    assert back.AcquisitionDateTime.endswith("093012.5") and back.StudyTime == original.StudyTime
    assert back.PixelData == original.PixelData
    assert back.ImagePositionPatient == original.ImagePositionPatient  # geometry is not identifying
    assert out.SOPInstanceUID == back.SOPInstanceUID


def test_consistent_within_a_namespace_and_unrelated_across() -> None:
    first = make_ct_case(PATIENTS[0], n_slices=2, rows=8, cols=8, seed=1, study_date="20230101")
    later = make_ct_case(PATIENTS[0], n_slices=2, rows=8, cols=8, seed=2, study_date="20230401")
    a, b = Deidentifier(KEY, "benchmark-1/dev"), Deidentifier(KEY, "benchmark-1/eval")
    one, two = a.deidentify(first.datasets[0]), a.deidentify(later.datasets[0])
    assert one.PatientID == two.PatientID  # the same patient keeps one pseudonym
    assert _day(two.StudyDate) - _day(one.StudyDate) == _day(later.study_date) - _day(first.study_date)
    assert a.deidentify(first.datasets[0]).SOPInstanceUID == one.SOPInstanceUID  # deterministic
    other = b.deidentify(first.datasets[0])
    assert other.SOPInstanceUID != one.SOPInstanceUID and other.PatientID != one.PatientID
    assert Deidentifier(b"another key", "benchmark-1/dev").uid(first.study_uid) != a.uid(first.study_uid)
    assert len(a.uid(first.study_uid)) <= 64 and a.uid("1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"
    assert first.datasets[0].PatientName == PATIENTS[0].name  # the original is not modified


def _day(value: str) -> dt.date:
    return dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def test_burned_in_annotation_is_refused() -> None:
    ds = make_ct_case(n_slices=1, rows=8, cols=8, seed=3).datasets[0]
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DeidentificationRefused, match="burned-in"):
        Deidentifier(KEY, "x").deidentify(ds)


def test_unparsable_dates_become_empty() -> None:
    assert shift_date("2024", 3) == "" and shift_date("20240230", 3) == ""
    assert shift_date("20240301", 1) == "20240229"
