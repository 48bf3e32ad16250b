"""Findings as DICOM: TID 1500 SR and SEG pass dciodvfy, parse back, and reference the right images."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from ai_plugins.builtin.lesion_detector import LesionDetector
from ai_plugins.sdk import (
    BoundingBox,
    Classification,
    Code,
    Finding,
    Findings,
    Measurement,
    PluginInfo,
    Point2D,
    Polygon,
    Segment,
    Segmentation,
    StudyInput,
    codes,
)
from ai_plugins.sr import (
    build_measurement_report,
    build_result_objects,
    build_segmentation,
    evidence_for,
    read_measurement_report,
)
from tests.factories import CtCase, Lesion, make_ct_case

LESION = Lesion((-60.0, 20.0, 10.0), 22.0)
ABNORMAL = codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE
VENDOR_PLUGIN = PluginInfo(name="acme-chest", version="2.1.0", vendor="ACME Imaging")


def dciodvfy(path: Path) -> tuple[str, list[str]]:
    """Run dciodvfy on a Part 10 file: (the IOD it recognised, every line starting with "Error")."""
    exe = shutil.which("dciodvfy")
    assert exe is not None, "dciodvfy (Debian dicom3tools) must be installed"
    done = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    return (lines[0].strip() if lines else ""), errors


def save(ds: Dataset, path: Path) -> Path:
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


@dataclass
class Run:
    case: CtCase
    study: StudyInput
    findings: Findings
    plugin: PluginInfo
    sr_path: Path
    seg_path: Path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The lesion detector on a small CT with a known lesion, its SR and SEG saved as files."""
    case = make_ct_case(n_slices=24, rows=64, cols=64, lesion=LESION, seed=11)
    study = StudyInput.from_datasets(case.datasets)
    plugin = LesionDetector()
    findings = plugin.run(study)
    sr, seg = build_result_objects(findings, study, plugin.info())
    out = tmp_path_factory.mktemp("results")
    return Run(case, study, findings, plugin.info(), save(sr, out / "sr.dcm"), save(seg, out / "seg.dcm"))


def test_dciodvfy_catches_a_broken_object(run: Run, tmp_path: Path) -> None:
    """The validator really runs: a required element removed is reported as an Error."""
    ds = pydicom.dcmread(run.sr_path)
    del ds.ContentDate
    iod, errors = dciodvfy(save(ds, tmp_path / "broken.dcm"))
    assert iod == "Comprehensive3DSR"
    assert any("ContentDate" in e for e in errors)


def test_sr_passes_dciodvfy(run: Run) -> None:
    iod, errors = dciodvfy(run.sr_path)
    assert iod == "Comprehensive3DSR"
    assert errors == []


def test_seg_passes_dciodvfy(run: Run) -> None:
    iod, errors = dciodvfy(run.seg_path)
    assert iod == "Segmentation"
    assert errors == []


def test_sr_is_a_new_series_in_the_source_study(run: Run) -> None:
    sr = hd.sr.srread(run.sr_path)
    source = run.case.datasets[0]
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert sr.StudyInstanceUID == run.case.study_uid
    assert sr.SeriesInstanceUID not in run.case.series_uids
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID"):
        assert sr.get(keyword) == source.get(keyword), keyword
    assert sr.Manufacturer == "cloudfilm"
    assert sr.SeriesDescription == "AI lesion-detector@1.0.0 findings"
    assert sr.SoftwareVersions == "1.0.0"
    assert sr.CompletionFlag == "COMPLETE"
    assert sr.VerificationFlag == "UNVERIFIED"


def test_sr_references_the_evaluated_images(run: Run) -> None:
    sr = hd.sr.srread(run.sr_path)
    (study_ref,) = sr.CurrentRequestedProcedureEvidenceSequence
    assert study_ref.StudyInstanceUID == run.case.study_uid
    (series_ref,) = study_ref.ReferencedSeriesSequence
    assert series_ref.SeriesInstanceUID == run.case.series_uids[0]
    referenced = {item.ReferencedSOPInstanceUID for item in series_ref.ReferencedSOPSequence}
    assert referenced == {ds.SOPInstanceUID for ds in run.case.datasets}


def _text(group: Sequence[Dataset], concept: str) -> list[str]:
    """TEXT values of the group's content items with DCM concept name ``concept``."""
    name = hd.sr.CodedConcept(concept, "DCM", "x")
    return [item.TextValue for item in hd.sr.utils.find_content_items(group[0], name=name, recursive=True)]


def _algorithm(description: hd.seg.SegmentDescription) -> Dataset:
    algorithm = description.algorithm_identification
    assert algorithm is not None
    return algorithm[0]


def test_sr_point_diameter_and_probabilities_come_back(run: Run) -> None:
    sr = hd.sr.srread(run.sr_path)
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    (group,) = report.get_planar_roi_measurement_groups()
    assert group.finding_type == hd.sr.CodedConcept("4147007", "SCT", "Mass")
    assert group.tracking_identifier == "Lesion 1"
    assert _text(group, "111001") == ["lesion-detector"]  # Algorithm Name (TID 4019)
    assert _text(group, "111003") == ["1.0.0"]  # Algorithm Version
    region = group.roi
    assert isinstance(region, hd.sr.ImageRegion3D)
    assert region.graphic_type == hd.sr.GraphicTypeValues3D.POINT
    assert region.frame_of_reference_uid == run.case.datasets[0].FrameOfReferenceUID
    point = np.asarray(region.value, dtype=float).reshape(3)
    assert np.linalg.norm(point - np.asarray(LESION.center_mm)) < LESION.radius_mm / 4
    assert group.get_measurements() == []  # the region group holds the region; its measurements follow
    classification, measured = report.get_image_measurement_groups()
    # the finding's measurements: a TID 1501 group tracking the same lesion (same UID and identifier)
    assert (measured.tracking_uid, measured.tracking_identifier) == (group.tracking_uid, "Lesion 1")
    assert measured.finding_type == group.finding_type
    (diameter,) = measured.get_measurements(name=hd.sr.CodedConcept("81827009", "SCT", "Diameter"))
    assert diameter.unit == hd.sr.CodedConcept("mm", "UCUM", "millimeter")
    assert diameter.value == pytest.approx(2 * LESION.radius_mm, rel=0.15)
    # the measurement cites the slice through the reported centre as its source ...
    (source,) = diameter.referenced_images
    nearest = min(run.case.datasets, key=lambda ds: abs(float(ds.ImagePositionPatient[2]) - point[2]))
    assert source.referenced_sop_instance_uid == nearest.SOPInstanceUID
    assert abs(float(nearest.ImagePositionPatient[2]) - LESION.center_mm[2]) <= float(nearest.SliceThickness)
    # ... and is inferred from the lesion's point (TID 300 INFERRED FROM SCOORD3D)
    (where,) = diameter.referenced_coordinates
    assert isinstance(where, hd.sr.CoordinatesForMeasurement3D)
    assert where.graphic_type == hd.sr.GraphicTypeValues3D.POINT
    assert np.asarray(where.value, dtype=float).reshape(3) == pytest.approx(point)
    (p_lesion,) = measured.get_measurements(name=hd.sr.CodedConcept("122157", "DCM", "Probability"))
    assert p_lesion.value == pytest.approx(run.findings.findings[0].probability)
    assert classification.finding_type == hd.sr.CodedConcept("129744006", "SCT", "High density lesion")
    (probability,) = classification.get_measurements(name=hd.sr.CodedConcept("122157", "DCM", "Probability"))
    assert probability.value == pytest.approx(run.findings.classifications[0].probability)
    assert probability.value > 0.9


def test_sr_reads_back_as_the_same_findings(run: Run) -> None:
    back = read_measurement_report(hd.sr.srread(run.sr_path))
    assert back == run.findings.model_copy(update={"segmentations": [], "summary": None})


def test_seg_masks_come_back_over_the_source_images(run: Run) -> None:
    seg = hd.seg.segread(run.seg_path)
    assert seg.StudyInstanceUID == run.case.study_uid
    assert seg.SeriesInstanceUID not in run.case.series_uids
    assert seg.SeriesDescription == "AI lesion-detector@1.0.0 segmentation"
    assert seg.Manufacturer == "cloudfilm"
    assert seg.SegmentationType == "BINARY"
    assert seg.get_segment_numbers() == [1]
    description = seg.get_segment_description(1)
    assert description.segment_label == "Lesion 1"
    assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    assert _algorithm(description).AlgorithmName == "lesion-detector"
    assert _algorithm(description).AlgorithmVersion == "1.0.0"
    assert _algorithm(description).AlgorithmSource == "cloudfilm"
    sources = {uid for _, _, uid in seg.get_source_image_uids()}
    assert sources == {ds.SOPInstanceUID for ds in run.case.datasets}
    volume = run.study.series[0].volume
    pixels = seg.get_pixels_by_source_instance(list(volume.sop_instance_uids), segment_numbers=[1])
    expected = run.findings.segmentations[0].segments[0].mask
    assert np.array_equal(pixels[..., 0].astype(bool), expected)
    # the mask sits on the lesion
    centre = np.round(volume.patient_to_index(LESION.center_mm)).astype(int)
    assert expected[tuple(centre)]


# --------------------------------------------------------------------------------------------
# findings a vendor might send: 2D regions, region-less findings, sites, several segments


def _vendor_findings(case: CtCase) -> Findings:
    a, b = case.datasets[3], case.datasets[7]
    series = case.series_uids[0]
    lung = Code(value="39607008", scheme="SCT", meaning="Lung")
    n_slices = sum(1 for ds in case.datasets if ds.SeriesInstanceUID == series)
    mask = np.zeros((n_slices, int(a.Rows), int(a.Columns)), dtype=bool)
    mask[2:6, 10:20, 12:22] = True
    other = np.zeros_like(mask)
    other[8:10, 30:40, 30:36] = True
    return Findings(
        evaluated_series=[series],
        classifications=[
            Classification(code=codes.NODULE, probability=0.61),
            Classification(code=codes.MASS, probability=0.12),
        ],
        findings=[
            Finding(code=codes.NODULE, probability=0.7, label="N1", finding_site=lung,
                    region=Point2D(sop_instance_uid=a.SOPInstanceUID, x=20.5, y=30.25),
                    measurements=[Measurement(name=codes.DIAMETER, value=8.0, unit=codes.UCUM_MM)]),
            Finding(code=codes.MASS, probability=0.4, label="M1", below_operating_point=True,
                    region=BoundingBox(sop_instance_uid=b.SOPInstanceUID, x_min=5, y_min=6, x_max=25.5, y_max=30)),
            Finding(code=codes.LESION, label="L1",
                    region=Polygon(sop_instance_uid=b.SOPInstanceUID, points=[(1, 1), (10, 1), (10, 12), (3, 9)])),
            Finding(code=codes.LESION, probability=0.3, label="Whole lung", below_operating_point=True,
                    measurements=[Measurement(name=codes.VOLUME, value=1234.5, unit=codes.UCUM_MM3)]),
        ],
        segmentations=[Segmentation(series_uid=series, segments=[
            Segment(label="N1", category=ABNORMAL, property_type=codes.NODULE, mask=mask),
            Segment(label="M1", category=ABNORMAL, property_type=codes.MASS, mask=other),
        ])],
    )  # fmt: skip


@pytest.fixture(scope="module")
def vendor_case() -> CtCase:
    return make_ct_case(n_slices=12, rows=48, cols=48, seed=21, series_count=2)


def test_vendor_findings_with_2d_regions(vendor_case: CtCase, tmp_path: Path) -> None:
    study = StudyInput.from_datasets(vendor_case.datasets)
    findings = _vendor_findings(vendor_case)
    sr, seg = build_result_objects(findings, study, VENDOR_PLUGIN)
    for ds, name, iod in ((sr, "sr.dcm", "Comprehensive3DSR"), (seg, "seg.dcm", "Segmentation")):
        found_iod, errors = dciodvfy(save(ds, tmp_path / name))
        assert (found_iod, errors) == (iod, [])
    # the evidence is the evaluated series only, not the study's second series
    assert {s.SeriesInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence} == {
        vendor_case.series_uids[0]
    }
    parsed = hd.sr.srread(tmp_path / "sr.dcm")
    report = parsed.content
    assert isinstance(report, hd.sr.MeasurementReport)
    regions = [g.roi for g in report.get_planar_roi_measurement_groups() if g.roi is not None]
    assert [r.graphic_type for r in regions] == [hd.sr.GraphicTypeValues.POINT, hd.sr.GraphicTypeValues.POLYLINE,
                                                 hd.sr.GraphicTypeValues.POLYLINE]  # fmt: skip
    assert [r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in regions] == [
        vendor_case.datasets[3].SOPInstanceUID,
        vendor_case.datasets[7].SOPInstanceUID,
        vendor_case.datasets[7].SOPInstanceUID,
    ]
    # each finding with a probability or measurements has them in a TID 1501 group of its tracking UID,
    # every one inferred from the region's SCOORD on the region's image; L1 has none, so no such group
    roi_groups = report.get_planar_roi_measurement_groups()
    assert all(g.get_measurements() == [] for g in roi_groups)
    measured = {str(g.tracking_uid): g for g in report.get_image_measurement_groups()}
    for roi_group, finding in zip(roi_groups, findings.findings[:3], strict=True):
        assert roi_group.tracking_identifier == finding.label
        group = measured.pop(str(roi_group.tracking_uid), None)
        if finding.label == "L1":
            assert group is None
            continue
        assert group is not None and group.tracking_identifier == finding.label
        names = [m.name.meaning for m in group.get_measurements()]
        assert names == [m.name.meaning for m in finding.measurements] + ["Probability"]
        for m in group.get_measurements():
            (where,) = m.referenced_coordinates
            assert isinstance(where, hd.sr.CoordinatesForMeasurement)
            assert where.graphic_type == roi_group.roi.graphic_type
            assert np.array_equal(np.asarray(where.value), np.asarray(roi_group.roi.value))
            image = where.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            assert image == roi_group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    # left: the two classifications and the region-less finding
    assert sorted(g.tracking_identifier for g in measured.values()) == ["Classification 1", "Classification 2",
                                                                         "Whole lung"]  # fmt: skip
    back = read_measurement_report(parsed)
    assert len(back.findings) == len(findings.findings)  # one finding per tracking UID, none counted twice
    box = findings.findings[1].region
    assert isinstance(box, BoundingBox)
    as_polygon = Polygon(
        sop_instance_uid=box.sop_instance_uid,
        points=[(box.x_min, box.y_min), (box.x_max, box.y_min), (box.x_max, box.y_max), (box.x_min, box.y_max)],
    )
    expected = [findings.findings[0], findings.findings[1].model_copy(update={"region": as_polygon}),
                *findings.findings[2:]]  # fmt: skip
    assert sorted(back.findings, key=lambda f: f.label or "") == sorted(expected, key=lambda f: f.label or "")
    assert back.classifications == findings.classifications
    assert back.evaluated_series == findings.evaluated_series
    # two segments, each over its own frames
    parsed_seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert parsed_seg.get_segment_numbers() == [1, 2]
    assert parsed_seg.SeriesDescription == "AI acme-chest@2.1.0 segmentation"
    assert _algorithm(parsed_seg.get_segment_description(2)).AlgorithmSource == "ACME Imaging"
    volume = study.get_series(vendor_case.series_uids[0]).volume
    pixels = parsed_seg.get_pixels_by_source_instance(list(volume.sop_instance_uids), segment_numbers=[1, 2])
    for n, segment in enumerate(findings.segmentations[0].segments):
        assert np.array_equal(pixels[..., n].astype(bool), segment.mask)


def test_seg_over_an_enhanced_multiframe_ct(tmp_path: Path) -> None:
    case = make_ct_case(n_slices=10, rows=32, cols=32, seed=5)
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=case.datasets[::-1],
        series_instance_uid=hd.UID(),
        series_number=3,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    study = StudyInput.from_datasets([enhanced])
    volume = study.series[0].volume
    mask = np.zeros(volume.shape, dtype=bool)
    mask[0:3, 5:15, 5:15] = True  # the three most inferior slices
    segmentation = Segmentation(
        series_uid=volume.datasets[0].SeriesInstanceUID,
        segments=[Segment(label="Low", category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, property_type=codes.LESION,
                          mask=mask)],
    )  # fmt: skip
    seg = build_segmentation(segmentation, volume, VENDOR_PLUGIN)
    iod, errors = dciodvfy(save(seg, tmp_path / "seg.dcm"))
    assert (iod, errors) == ("Segmentation", [])
    parsed = hd.seg.segread(tmp_path / "seg.dcm")
    frames = parsed.get_pixels_by_source_frame(
        source_sop_instance_uid=enhanced.SOPInstanceUID,
        source_frame_numbers=[f for f in volume.frame_numbers if f is not None],
        segment_numbers=[1],
    )
    assert np.array_equal(frames[..., 0].astype(bool), mask)


def test_writers_refuse_what_does_not_fit(run: Run) -> None:
    volume = run.study.series[0].volume
    bad = Segmentation(
        series_uid=run.case.series_uids[0],
        segments=[Segment(label="x", category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, property_type=codes.LESION,
                          mask=np.ones((2, 2, 2), dtype=bool))],
    )  # fmt: skip
    with pytest.raises(ValueError, match="shape"):
        build_segmentation(bad, volume, run.plugin)
    stray = Findings(findings=[Finding(code=codes.MASS, region=Point2D(sop_instance_uid="1.2.3.4", x=1, y=1))])
    with pytest.raises(ValueError, match="1.2.3.4"):
        build_measurement_report(stray, evidence_for(run.findings, run.study), run.plugin)
    with pytest.raises(ValueError, match="evidence"):
        build_measurement_report(run.findings, [], run.plugin)


def test_negative_study_still_gets_a_valid_report(tmp_path: Path) -> None:
    case = make_ct_case(n_slices=20, rows=48, cols=48, seed=2)
    study = StudyInput.from_datasets(case.datasets)
    plugin = LesionDetector()
    findings = plugin.run(study)
    # no positive call: at most the best candidate, marked below the operating point, and no mask
    assert len(findings.findings) <= 1 and all(f.below_operating_point for f in findings.findings)
    assert findings.segmentations == []
    (sr,) = build_result_objects(findings, study, plugin.info())
    assert dciodvfy(save(sr, tmp_path / "sr.dcm")) == ("Comprehensive3DSR", [])
    back = read_measurement_report(hd.sr.srread(tmp_path / "sr.dcm"))
    assert back.classifications == findings.classifications
    assert [f.below_operating_point for f in back.findings] == [f.below_operating_point for f in findings.findings]
    # not a positive call: under the calibrated operating point (this tiny 48×48×20 negative scores
    # about 0.58 with the refitted calibration, whose training volumes are 128×128)
    assert back.classifications[0].probability < plugin.calibration.operating_point


def test_evidence_defaults_to_the_image_series(run: Run) -> None:
    """Findings that name no evaluated series (a vendor's) cite every image series, not earlier results."""
    sr = hd.sr.srread(run.sr_path)
    study = StudyInput.from_datasets([*run.case.datasets, sr])
    evidence = evidence_for(Findings(), study)
    assert {ds.SOPInstanceUID for ds in evidence} == {ds.SOPInstanceUID for ds in run.case.datasets}
