"""SR → viewer overlay (``ai_plugins.sr.overlay``): image planes from DICOM JSON, projections, shapes.

The endpoint test (``tests/viewer_api/test_findings.py``) covers a whole study through the archive;
these cover what it does not: enhanced multi-frame geometry, pixels that are not square, points
outside the images, 2D circles and ellipses, objects that are no Measurement Report, and a finding
written as two groups of one tracking UID (region, then measurements) read as one finding.
"""

from __future__ import annotations

import math

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset

from ai_plugins.sdk import Finding, Findings, Measurement, PluginInfo, Point2D, Point3D, codes
from ai_plugins.sr import build_measurement_report, read_measurement_report
from ai_plugins.sr.overlay import (
    ImagePlane,
    OverlayMeasurement,
    Region2D,
    Region3D,
    Report,
    ReportItem,
    geometry_series,
    overlay_findings,
    planes_from_metadata,
    read_report,
)
from tests.factories import make_ct_case

PLUGIN = PluginInfo(name="acme-chest", version="2.1.0", vendor="ACME Imaging")


def _json(ds: Dataset) -> dict[str, object]:
    return ds.to_json_dict(bulk_data_threshold=64, bulk_data_element_handler=lambda _e: "bulk")


def _plane(spacing: tuple[float, float] = (1.0, 1.0), z: float = 0.0, sop: str = "1.2.3.1") -> ImagePlane:
    return ImagePlane(sop_uid=sop, series_uid="1.2.3", frame=1, frame_of_reference_uid="1.2.9",
                      position=(-50.0, -50.0, z), row_direction=(1.0, 0.0, 0.0), column_direction=(0.0, 1.0, 0.0),
                      spacing=spacing, rows=100, columns=100)  # fmt: skip


def _report(*items: ReportItem, uid: str = "1.2.5", when: str = "2024-01-01T10:00:00") -> Report:
    return Report(sop_uid=uid, series_uid="1.2.4", datetime=when, instance_number=1, algorithm="acme-chest@2.1.0",
                  algorithm_name="acme-chest", evaluated_series=("1.2.3",), items=items)  # fmt: skip


def _item(region: Region2D | Region3D, diameter: float | None = None) -> ReportItem:
    measurements = (OverlayMeasurement(name="Diameter", value=diameter, unit="mm"),) if diameter else ()
    return ReportItem(kind="finding", code=codes.NODULE, tracking_id="Lesion 1", algorithm="acme-chest@2.1.0",
                      probability=0.8, measurements=measurements, evaluations=(), region=region,
                      source_sops=())  # fmt: skip


def test_single_frame_planes_come_from_the_stored_json() -> None:
    case = make_ct_case(n_slices=3, rows=16, cols=24, seed=1)
    ds = case.datasets[0]
    [plane] = planes_from_metadata(_json(ds))
    assert plane.sop_uid == ds.SOPInstanceUID and plane.frame == 1
    assert (plane.rows, plane.columns) == (16, 24)
    assert plane.to_pixels([float(v) for v in ds.ImagePositionPatient]) == pytest.approx((0.5, 0.5))
    assert planes_from_metadata({"00080018": {"vr": "UI", "Value": ["1.2"]}}) == []  # no geometry, no plane


def test_a_3d_point_lands_on_the_right_frame_of_an_enhanced_multiframe_image() -> None:
    case = make_ct_case(n_slices=10, rows=32, cols=32, seed=5)
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=case.datasets[::-1], series_instance_uid=hd.UID(), series_number=3,
        sop_instance_uid=hd.UID(), instance_number=1,
    )  # fmt: skip
    planes = planes_from_metadata(_json(enhanced))
    assert [p.frame for p in planes] == list(range(1, 11))
    target = case.datasets[3]
    positions = [list(map(float, f.PlanePositionSequence[0].ImagePositionPatient))
                 for f in enhanced.PerFrameFunctionalGroupsSequence]  # fmt: skip
    frame = 1 + positions.index(list(map(float, target.ImagePositionPatient)))
    x, y, _ = (float(v) for v in target.ImagePositionPatient)
    z = float(target.ImagePositionPatient[2]) + 1.0
    point = Point3D(x=x + 10 * float(target.PixelSpacing[1]), y=y + 4 * float(target.PixelSpacing[0]), z=z,
                    frame_of_reference_uid=str(target.FrameOfReferenceUID))  # fmt: skip
    sr = build_measurement_report(Findings(findings=[Finding(code=codes.NODULE, region=point)]), [enhanced], PLUGIN)
    report = read_report(sr)
    assert report is not None and report.evaluated_series == (str(enhanced.SeriesInstanceUID),)
    series_of = {str(enhanced.SOPInstanceUID): str(enhanced.SeriesInstanceUID)}
    assert geometry_series([report], series_of) == [str(enhanced.SeriesInstanceUID)]
    [row] = overlay_findings([report], planes, series_of)
    assert (row.sop_uid, row.frame, row.shape) == (str(enhanced.SOPInstanceUID), frame, "point")
    assert row.points == [pytest.approx((10.5, 4.5), abs=0.01)]
    assert row.distance_mm == pytest.approx(1.0) and row.plugin == "acme-chest@2.1.0"


def test_a_diameter_on_pixels_that_are_not_square_is_an_ellipse() -> None:
    plane = _plane(spacing=(2.0, 0.5))  # rows 2 mm apart, columns 0.5 mm apart
    region = Region3D("POINT", ((-20.0, -20.0, 0.4),), "1.2.9")
    [row] = overlay_findings([_report(_item(region, diameter=10.0))], [plane, _plane(z=5.0, sop="1.2.3.2")], {})
    assert row.shape == "ellipse" and row.sop_uid == "1.2.3.1"
    assert ((row.points[0][0] + row.points[1][0]) / 2, row.points[2][1] + 2.5) == pytest.approx((60.5, 15.5))
    (a1, a2, b1, b2) = row.points
    assert math.dist(a1, a2) == pytest.approx(20.0) and math.dist(b1, b2) == pytest.approx(5.0)  # 10 mm each way
    assert row.text == "Lesion 1 · probability 0.80 · Diameter 10.0 mm"


def test_a_point_off_the_slab_or_off_the_image_is_listed_but_not_drawn() -> None:
    planes = [_plane(z=0.0), _plane(z=5.0, sop="1.2.3.2")]
    far = _item(Region3D("POINT", ((0.0, 0.0, 30.0),), "1.2.9"))
    outside = _item(Region3D("POINT", ((500.0, 0.0, 0.0),), "1.2.9"))
    elsewhere = _item(Region3D("POINT", ((0.0, 0.0, 0.0),), "1.2.999"))
    rows = overlay_findings([_report(far, outside, elsewhere)], planes, {})
    assert [(r.points, r.shape, r.sop_uid) for r in rows] == [([], None, None)] * 3
    assert [r.text.split(" · ")[-1] for r in rows] == [
        "25.0 mm from the nearest slice", "outside the images", "no images in its frame of reference"]


def test_2d_circles_ellipses_and_polylines_pass_through() -> None:
    series_of = {"1.2.3.1": "1.2.3"}
    circle = _item(Region2D("CIRCLE", ((10.0, 10.0), (14.0, 10.0)), "1.2.3.1", None))
    ellipse = _item(Region2D("ELLIPSE", ((0.0, 5.0), (10.0, 5.0), (5.0, 3.0), (5.0, 7.0)), "1.2.3.1", 1))
    line = _item(Region2D("POLYLINE", ((0.0, 0.0), (5.0, 5.0)), "1.2.3.1", None))
    lost = _item(Region2D("POINT", ((1.0, 1.0),), "9.9.9", None))
    rows = overlay_findings([_report(circle, ellipse, line, lost)], [], series_of)
    assert [(r.shape, len(r.points), r.frame, r.series_uid) for r in rows] == [
        ("circle", 2, 1, "1.2.3"), ("ellipse", 4, 1, "1.2.3"), ("polyline", 2, 1, "1.2.3"), (None, 0, None, None)]


def test_newest_report_first_and_an_algorithms_older_reports_superseded() -> None:
    point = _item(Region3D("POINT", ((0.0, 0.0, 0.0),), "1.2.9"))
    old = _report(point, uid="1.2.5.1", when="2024-01-01T10:00:00")
    new = _report(point, uid="1.2.5.2", when="2024-03-01T10:00:00")
    other = Report(sop_uid="1.2.5.3", series_uid="1.2.4", datetime="2023-01-01T00:00:00", instance_number=1,
                   algorithm="other@1", algorithm_name="other", evaluated_series=(), items=(point,))  # fmt: skip
    rows = overlay_findings([old, other, new], [_plane()], {})
    assert [(r.report_uid, r.superseded) for r in rows] == [("1.2.5.2", False), ("1.2.5.1", True), ("1.2.5.3", False)]


def test_what_is_no_measurement_report_is_skipped() -> None:
    ct = make_ct_case(n_slices=1, rows=16, cols=16, seed=2).datasets[0]
    assert read_report(ct) is None
    sr = build_measurement_report(
        Findings(findings=[Finding(code=codes.NODULE, measurements=[
            Measurement(name=codes.DIAMETER, value=3.0, unit=codes.UCUM_MM)])]), [ct], PLUGIN)  # fmt: skip
    report = read_report(sr)
    assert report is not None and [i.region for i in report.items] == [None]
    del sr.ContentSequence  # an empty document: not a TID 1500 report any more
    assert read_report(sr) is None


def _region_group_with_measurements(ds: Dataset) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """A TID 1410 group with its measurements inside, as this archive wrote findings before and others do."""
    image = hd.sr.SourceImageForRegion(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="N1"),
        referenced_region=hd.sr.ImageRegion(hd.sr.GraphicTypeValues.POINT, np.array([[5.0, 6.0]]), image),
        finding_type=hd.sr.CodedConcept(codes.NODULE.value, codes.NODULE.scheme, codes.NODULE.meaning),
        measurements=[
            hd.sr.Measurement(name=hd.sr.CodedConcept("81827009", "SCT", "Diameter"), value=4.0,
                              unit=hd.sr.CodedConcept("mm", "UCUM", "millimeter")),
            hd.sr.Measurement(name=hd.sr.CodedConcept("122157", "DCM", "Probability"), value=0.7,
                              unit=hd.sr.CodedConcept("1", "UCUM", "no units")),
        ],
    )  # fmt: skip


def test_a_findings_region_and_measurement_groups_read_as_one_finding() -> None:
    case = make_ct_case(n_slices=4, rows=16, cols=16, seed=3)
    ds = case.datasets[1]
    finding = Finding(code=codes.NODULE, probability=0.7, label="N1", below_operating_point=True,
                      region=Point2D(sop_instance_uid=str(ds.SOPInstanceUID), x=5.0, y=6.0),
                      measurements=[Measurement(name=codes.DIAMETER, value=4.0, unit=codes.UCUM_MM)])  # fmt: skip
    sr = build_measurement_report(Findings(findings=[finding]), case.datasets, PLUGIN)
    content = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    assert isinstance(content, hd.sr.MeasurementReport)
    assert len(content.get_planar_roi_measurement_groups()) == len(content.get_image_measurement_groups()) == 1
    report = read_report(sr)
    assert report is not None
    [item] = report.items
    assert (item.kind, item.tracking_id, item.probability, item.algorithm) == ("finding", "N1", 0.7,
                                                                              "acme-chest@2.1.0")  # fmt: skip
    assert item.region == Region2D("POINT", ((5.0, 6.0),), str(ds.SOPInstanceUID), None)
    assert item.measurements == (OverlayMeasurement(name="Diameter", value=4.0, unit="mm"),)
    assert item.evaluations == ("Relation to operating point: Below operating point",)
    [row] = overlay_findings([report], [], {str(ds.SOPInstanceUID): str(ds.SeriesInstanceUID)})
    assert (row.finding_key, row.shape, row.text) == (
        "N1", "point", "N1 · probability 0.70 · Diameter 4 mm · Relation to operating point: Below operating point")

    # a region group that holds its own measurements (no second group) reads the same way
    old = hd.sr.Comprehensive3DSR(
        evidence=case.datasets, content=hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(),
            procedure_reported=hd.sr.CodedConcept("25045-6", "LN", "CT unspecified body region"),
            imaging_measurements=[_region_group_with_measurements(ds)])[0],
        series_instance_uid=hd.UID(), series_number=9100, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="elsewhere",
    )  # fmt: skip
    old_report = read_report(old)
    assert old_report is not None
    [old_item] = old_report.items
    assert (old_item.tracking_id, old_item.probability, old_item.measurements, old_item.region) == (
        "N1", 0.7, item.measurements, item.region)  # fmt: skip
    back = read_measurement_report(old)
    assert back.findings == [finding.model_copy(update={"below_operating_point": False})]
