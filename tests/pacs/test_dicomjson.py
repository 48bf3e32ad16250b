"""The fast DICOM JSON conversion gives exactly what pydicom's own conversion gives."""

from __future__ import annotations

import io
import json

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEGLSLossless, RLELossless

from pacs.dicomfile import parse_part10
from pacs.dicomjson import header_json
from pacs.index.records import build_record, identity_of
from tests import factories as f


def _pydicom_json(ds: Dataset, prefix: str, pixel_vr: str | None) -> dict[str, object]:
    def handler(elem: DataElement) -> str:
        return f"{prefix}/bulk/{elem.tag:08X}"

    body: dict[str, object] = ds.to_json_dict(1024, handler)
    if pixel_vr is not None:
        body["7FE00010"] = {"vr": pixel_vr, "BulkDataURI": f"{prefix}/bulk/7FE00010"}
    return body


def _cases() -> list[Dataset]:
    base = [*f.make_ct_study(n_slices=1), *f.make_ct_study(f.PATIENTS[4], n_slices=1, modality="MR"),
            f.make_rgb(), f.make_palette(), f.make_multiframe(), f.make_gray8()]
    odd = f.make_ct_study(f.PATIENTS[2], n_slices=1, seed=3)[0]
    odd.ImageType = ["ORIGINAL", "", "AXIAL"]  # an empty value inside a multi-valued element
    odd.add_new(0x00091010, "LO", "private text")
    odd.add_new(0x00091011, "OB", b"\x01\x02" * 600)  # private binary, long enough to be bulk data
    odd.add_new(0x00200011, "IS", " 7 ")
    odd.ReferencedImageSequence = [Dataset()]
    odd.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3"
    latin1 = f.make_ct_study(f.PATIENTS[1], n_slices=1, seed=4)[0]
    latin1.SpecificCharacterSet = "ISO_IR 100"
    latin1.StudyDescription = "Thorax nativ, Übersicht"
    iso2022 = f.make_ct_study(f.PATIENTS[4], n_slices=1, seed=5)[0]
    iso2022.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    iso2022.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    base += [latin1, iso2022]
    encoded = [f.encode(d, ts) for d in base[:2] for ts in (ImplicitVRLittleEndian, ExplicitVRBigEndian,
                                                              RLELossless, JPEGLSLossless)]
    return [*base, odd, *encoded]



@pytest.mark.parametrize("ds", _cases(), ids=lambda d: f"{d.Modality}-{d.file_meta.TransferSyntaxUID}")
def test_same_as_pydicom(ds: Dataset) -> None:
    data = f.to_bytes(ds)
    fast = parse_part10(io.BytesIO(data), len(data))
    slow = parse_part10(io.BytesIO(data), len(data))
    assert json.loads(header_json(fast.dataset, "p", fast.pixel_vr)) == _pydicom_json(slow.dataset, "p", slow.pixel_vr)


def _pydicom_text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).strip(" \x00")


@pytest.mark.parametrize("ds", _cases(), ids=lambda d: f"{d.Modality}-{d.file_meta.TransferSyntaxUID}")
def test_index_columns_read_from_the_model_match_pydicom(ds: Dataset) -> None:
    data = f.to_bytes(ds)
    parsed = parse_part10(io.BytesIO(data), len(data))
    record = build_record(parsed, identity_of(parsed.dataset), object_key="k", size=len(data), sha256="0" * 64,
                          dataset_sha256="1" * 64)
    slow = parse_part10(io.BytesIO(data), len(data)).dataset
    assert record.patient.patient_name == _pydicom_text(slow, "PatientName")
    assert record.patient.patient_id == _pydicom_text(slow, "PatientID")
    assert record.study.specific_charset == _pydicom_text(slow, "SpecificCharacterSet")
    assert record.study.study_description == _pydicom_text(slow, "StudyDescription")
    assert record.study.referring_physician == _pydicom_text(slow, "ReferringPhysicianName")
    assert record.study.study_date == _pydicom_text(slow, "StudyDate")
    assert record.series.modality == _pydicom_text(slow, "Modality")
    assert record.series.series_number == (int(slow.SeriesNumber) if "SeriesNumber" in slow else None)
    assert record.instance_number == (int(slow.InstanceNumber) if "InstanceNumber" in slow else None)
    assert (record.rows, record.columns) == (slow.get("Rows"), slow.get("Columns"))
    prefix = f"studies/{slow.StudyInstanceUID}/series/{slow.SeriesInstanceUID}/instances/{slow.SOPInstanceUID}"
    assert json.loads(record.metadata_json) == json.loads(header_json(slow, prefix, parsed.pixel_vr))


def test_sequences_of_defined_length_are_converted_without_pydicom(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nested, empty and multi-item sequences take the fast path and still equal pydicom's output."""
    ds = f.make_ct_study(f.PATIENTS[3], n_slices=1, seed=9)[0]
    ds.ReferencedImageSequence = []
    ds.ProcedureCodeSequence = [Dataset(), Dataset()]
    ds.ProcedureCodeSequence[0].CodeValue = "CT-THX"
    ds.ProcedureCodeSequence[0].CodingSchemeDesignator = "99LOCAL"
    ds.ProcedureCodeSequence[1].CodeMeaning = "Thorax"
    inner = Dataset()
    inner.CodeValue = "113691"
    inner.CodingSchemeDesignator = "DCM"
    ds.ProcedureCodeSequence[1].ConceptNameCodeSequence = [inner]
    data = f.to_bytes(ds)
    expected_src = parse_part10(io.BytesIO(data), len(data))
    expected = _pydicom_json(expected_src.dataset, "p", expected_src.pixel_vr)
    parsed = parse_part10(io.BytesIO(data), len(data))

    pydicom_conversion = DataElement.to_json_dict

    def not_for_sequences(elem: DataElement, *args: object, **kwargs: object) -> object:
        assert elem.VR != "SQ", f"pydicom converted the sequence {elem.tag}"
        return pydicom_conversion(elem, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DataElement, "to_json_dict", not_for_sequences)
    assert json.loads(header_json(parsed.dataset, "p", parsed.pixel_vr)) == expected
