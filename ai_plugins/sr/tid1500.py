"""Findings ⇄ Comprehensive 3D SR following TID 1500 Measurement Report (PS3.16 TID 1500).

Writing: every study-level classification becomes a TID 1501 measurement group (finding =
the classification's code, a "Probability" measurement). A finding with a region becomes a TID 1410
planar ROI group holding the region, a SCOORD on a referenced image (point, box as a closed
polygon, polygon) or a SCOORD3D point in the frame of reference, its finding site and evaluations,
followed by a TID 1501 group with the same Tracking Unique Identifier holding its measurements
(UCUM units) and probability, each inferred from the same coordinates (TID 300/320); a finding
without a region is one TID 1501 group. The algorithm (TID 4019) names the plugin and version;
the device observer (TID 1004) names the vendor. The evaluated images are the evidence; the key
images (those the regions lie on, the slice nearest each 3D point) form the image library
(TID 1600).
Classification groups are tracked as "Classification <n>", which is how the reader tells them
from region-less findings.

Reading (:func:`read_measurement_report`) turns such an SR back into :class:`Findings`, so the
viewer and tests see exactly what a plugin said; the groups of one Tracking Unique Identifier are
one finding (:func:`tracked_together`), and SRs written with measurements inside the TID 1410
group read as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TypeVar

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.sr.coding import Code as DicomCode

from ai_plugins.sdk import (
    BoundingBox,
    Classification,
    Code,
    Finding,
    Findings,
    Measurement,
    PluginInfo,
    Point2D,
    Point3D,
    Polygon,
    codes,
)

__all__ = [
    "MANUFACTURER",
    "SR_SERIES_NUMBER",
    "build_measurement_report",
    "derived_uid",
    "nearest_image",
    "procedure_reported",
    "read_measurement_report",
    "to_dicom_code",
    "tracked_together",
]

Group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations
R = TypeVar("R", hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations,
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations)  # fmt: skip
G = TypeVar("G", bound=hd.sr.MeasurementsAndQualitativeEvaluations)

MANUFACTURER = "cloudfilm"
SR_SERIES_NUMBER = 9100
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://cloudfilm.invalid/ai-plugins")


def derived_uid(*parts: object) -> str:
    """A deterministic "2.25." UID (PS3.5 B.2) from ``parts`` (device UIDs, reproducible tests)."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(31).join(str(p) for p in parts)).int}"


def to_dicom_code(code: Code) -> DicomCode:
    return DicomCode(value=code.value, scheme_designator=code.scheme, meaning=code.meaning,
                     scheme_version=code.scheme_version)  # fmt: skip


def _from_dicom_code(code: DicomCode | hd.sr.CodedConcept) -> Code:
    version = getattr(code, "scheme_version", None)
    return Code(value=str(code.value), scheme=str(code.scheme_designator), meaning=str(code.meaning),
                scheme_version=str(version) if version else None)  # fmt: skip


def procedure_reported(evidence: Sequence[Dataset]) -> DicomCode:
    """CID 100 procedure from the evaluated modality."""
    modalities = {str(ds.get("Modality", "")) for ds in evidence}
    if modalities == {"CT"}:
        return dcm_codes.LN.CTUnspecifiedBodyRegion
    if modalities == {"MR"}:
        return dcm_codes.LN.MRIUnspecifiedBodyRegion
    return dcm_codes.SCT.ImagingProcedure


def _algorithm(plugin: PluginInfo) -> hd.sr.AlgorithmIdentification:
    parameters = [f"sha256:{plugin.package_digest}"] if plugin.package_digest else None
    return hd.sr.AlgorithmIdentification(name=plugin.name, version=plugin.version, parameters=parameters)


def _probability(value: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=to_dicom_code(codes.PROBABILITY), value=float(value), unit=to_dicom_code(codes.UCUM_NO_UNITS)
    )


def _measurements(
    finding: Finding,
    source: Dataset | None,
    coordinates: hd.sr.CoordinatesForMeasurement | hd.sr.CoordinatesForMeasurement3D | None = None,
) -> list[hd.sr.Measurement]:
    """TID 300 measurements of ``finding``: each cites ``source`` (the image it was measured on) and is
    inferred from ``coordinates`` (the finding's region), where given."""
    images = (
        [hd.sr.SourceImageForMeasurement(str(source.SOPClassUID), str(source.SOPInstanceUID))]
        if source is not None
        else None
    )
    where = [coordinates] if coordinates is not None else None
    out = [
        hd.sr.Measurement(
            name=to_dicom_code(m.name), value=float(m.value), unit=to_dicom_code(m.unit), referenced_images=images,
            referenced_coordinates=where,
        )
        for m in finding.measurements
    ]
    if finding.probability is not None:
        out.append(hd.sr.Measurement(
            name=to_dicom_code(codes.PROBABILITY), value=float(finding.probability),
            unit=to_dicom_code(codes.UCUM_NO_UNITS), referenced_coordinates=where,
        ))  # fmt: skip
    return out


def nearest_image(point: Point3D, evidence: Sequence[Dataset]) -> Dataset | None:
    """The single-frame image of ``point``'s frame of reference whose plane lies closest to it."""
    best: tuple[float, Dataset] | None = None
    p = np.array(point.as_tuple())
    for ds in evidence:
        if (
            str(ds.get("FrameOfReferenceUID", "")) != point.frame_of_reference_uid
            or int(ds.get("NumberOfFrames", 1)) > 1
        ):
            continue
        ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
        if not ipp or not iop or len(ipp) != 3 or len(iop) != 6:
            continue
        normal = np.cross(np.array(iop[:3], dtype=float), np.array(iop[3:], dtype=float))
        distance = abs(float(np.dot(p - np.array(ipp, dtype=float), normal)))
        if best is None or distance < best[0]:
            best = (distance, ds)
    return best[1] if best else None


def _key_image(finding: Finding, evidence: Sequence[Dataset], by_uid: dict[str, Dataset]) -> Dataset | None:
    """The image a finding is best looked at on: the one its 2D region is on, or the 3D point's slice."""
    region = finding.region
    if isinstance(region, Point3D):
        return nearest_image(region, evidence)
    if isinstance(region, Point2D | BoundingBox | Polygon):
        return by_uid.get(region.sop_instance_uid)
    return None


def _source_image(uid: str, frame: int | None, by_uid: dict[str, Dataset]) -> hd.sr.SourceImageForRegion:
    ds = by_uid.get(uid)
    if ds is None:
        raise ValueError(f"finding refers to instance {uid}, which is not among the evaluated images")
    return hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=str(ds.SOPClassUID),
        referenced_sop_instance_uid=uid,
        referenced_frame_numbers=[frame] if frame is not None else None,
    )


def _geometry(finding: Finding) -> tuple[str, np.ndarray]:
    """The region's graphic type and data as written (boxes and polygons as closed polylines)."""
    region = finding.region
    if isinstance(region, Point3D):
        return "POINT", np.array([[region.x, region.y, region.z]])
    if isinstance(region, Point2D):
        return "POINT", np.array([[region.x, region.y]])
    if isinstance(region, BoundingBox):
        corners = [
            (region.x_min, region.y_min),
            (region.x_max, region.y_min),
            (region.x_max, region.y_max),
            (region.x_min, region.y_max),
            (region.x_min, region.y_min),
        ]
        return "POLYLINE", np.array(corners)
    if isinstance(region, Polygon):
        points = list(region.points)
        if points[0] != points[-1]:
            points.append(points[0])
        return "POLYLINE", np.array(points)
    raise ValueError("finding has no region")


def _region(finding: Finding, by_uid: dict[str, Dataset]) -> hd.sr.ImageRegion | hd.sr.ImageRegion3D:
    """The TID 1410 region: a SCOORD on the image it lies on, or a SCOORD3D in the frame of reference."""
    graphic_type, data = _geometry(finding)
    region = finding.region
    if isinstance(region, Point3D):
        return hd.sr.ImageRegion3D(graphic_type=hd.sr.GraphicTypeValues3D[graphic_type], graphic_data=data,
                                   frame_of_reference_uid=region.frame_of_reference_uid)  # fmt: skip
    assert isinstance(region, Point2D | BoundingBox | Polygon)
    source = _source_image(region.sop_instance_uid, region.frame_number, by_uid)
    return hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues[graphic_type], graphic_data=data,
                             source_image=source)  # fmt: skip


def _coordinates(
    finding: Finding, by_uid: dict[str, Dataset]
) -> hd.sr.CoordinatesForMeasurement | hd.sr.CoordinatesForMeasurement3D:
    """The same region as the TID 320 coordinates a TID 300 measurement is inferred from."""
    graphic_type, data = _geometry(finding)
    region = finding.region
    if isinstance(region, Point3D):
        return hd.sr.CoordinatesForMeasurement3D(graphic_type=hd.sr.GraphicTypeValues3D[graphic_type],
                                                 graphic_data=data,
                                                 frame_of_reference_uid=region.frame_of_reference_uid)  # fmt: skip
    assert isinstance(region, Point2D | BoundingBox | Polygon)
    source = _source_image(region.sop_instance_uid, region.frame_number, by_uid)
    return hd.sr.CoordinatesForMeasurement(graphic_type=hd.sr.GraphicTypeValues[graphic_type], graphic_data=data,
                                           source_image=source)  # fmt: skip


def _tracking(label: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label)


def _classification_group(
    n: int, c: Classification, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(f"Classification {n}"),
        finding_type=to_dicom_code(c.code),
        algorithm_id=algorithm,
        measurements=[_probability(c.probability)],
    )


def _finding_groups(
    n: int,
    f: Finding,
    algorithm: hd.sr.AlgorithmIdentification,
    by_uid: dict[str, Dataset],
    key_image: Dataset | None,
) -> list[Group]:
    """A finding's measurement groups, one tracked entity (TID 4108: one Tracking Unique Identifier).

    A finding with a region is a TID 1410 group holding the region (no measurements) followed, when
    it has a probability or measurements, by a TID 1501 group holding them, each inferred from the
    same region (TID 300 INFERRED FROM SCOORD/SCOORD3D). Viewers that rebuild their own annotations
    from an SR (OHIF's Cornerstone adapters) read a region group's first NUM as the measurement of
    the region and want the coordinates under it; the readers here merge the groups of one tracking
    UID back into one finding.
    """
    sites = [hd.sr.FindingSite(anatomic_location=to_dicom_code(f.finding_site))] if f.finding_site else None
    label = f.label or f"Finding {n}"
    uid = hd.UID()
    evaluations = _qualitative(f)
    if f.region is None:
        return [hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=label),
            finding_type=to_dicom_code(f.code), algorithm_id=algorithm, finding_sites=sites,
            measurements=_measurements(f, None) or None, qualitative_evaluations=evaluations,
        )]  # fmt: skip
    groups: list[Group] = [hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=label),
        referenced_region=_region(f, by_uid), finding_type=to_dicom_code(f.code), algorithm_id=algorithm,
        finding_sites=sites, qualitative_evaluations=evaluations,
    )]  # fmt: skip
    source = key_image if isinstance(f.region, Point3D) else None
    measurements = _measurements(f, source, _coordinates(f, by_uid))
    if measurements:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=label),
            finding_type=to_dicom_code(f.code), algorithm_id=algorithm, finding_sites=sites,
            measurements=measurements,
        ))  # fmt: skip
    return groups


def _qualitative(f: Finding) -> list[hd.sr.QualitativeEvaluation] | None:
    """A candidate under the plugin's operating point says so in its group (read back by the reader)."""
    if not f.below_operating_point:
        return None
    return [hd.sr.QualitativeEvaluation(to_dicom_code(codes.OPERATING_POINT),
                                        to_dicom_code(codes.BELOW_OPERATING_POINT))]  # fmt: skip


def _below_operating_point(group: Group) -> bool:
    for item in group.get_qualitative_evaluations(name=to_dicom_code(codes.OPERATING_POINT)):
        value = item.value
        if isinstance(value, hd.sr.CodedConcept) and (value.value, value.scheme_designator) == (
                codes.BELOW_OPERATING_POINT.value, codes.BELOW_OPERATING_POINT.scheme):  # fmt: skip
            return True
    return False


def build_measurement_report(
    findings: Findings,
    evidence: Sequence[Dataset],
    plugin: PluginInfo,
    *,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = SR_SERIES_NUMBER,
    instance_number: int = 1,
    institution_name: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR for ``findings``, a new series in the study of ``evidence``.

    ``evidence`` are the headers of the images the plugin evaluated: all of them are listed in the
    Current Requested Procedure Evidence Sequence and give the patient and study modules; every
    image a 2D region refers to must be among them. The image library (TID 1600) holds the key
    images: those 2D regions lie on, and for a 3D point the slice nearest to it, which its
    measurements also cite as their source (TID 300 "Source of Measurement").
    """
    if not evidence:
        raise ValueError("an SR needs the evaluated images as evidence")
    studies = {str(ds.StudyInstanceUID) for ds in evidence}
    if len(studies) != 1:
        raise ValueError("the evidence must come from one study")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in evidence}
    algorithm = _algorithm(plugin)
    groups: list[Group] = [
        _classification_group(n, c, algorithm) for n, c in enumerate(findings.classifications, start=1)
    ]
    key_images = [_key_image(f, evidence, by_uid) for f in findings.findings]
    for n, (f, key) in enumerate(zip(findings.findings, key_images, strict=True), start=1):
        groups += _finding_groups(n, f, algorithm, by_uid, key)
    library = list({str(ds.SOPInstanceUID): ds for ds in key_images if ds is not None}.values())

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid("device", plugin.vendor, plugin.name, plugin.version),
        name=plugin.key,
        manufacturer_name=plugin.vendor,
        model_name=plugin.name,
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=dcm_codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=procedure_reported(evidence),
        imaging_measurements=groups or None,
        referenced_images=library or None,
    )
    first = evidence[0]
    return hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=report[0],
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=plugin.name,
        software_versions=plugin.version,
        device_serial_number=plugin.key,
        institution_name=institution_name or first.get("InstitutionName"),
        series_description=f"AI {plugin.key} findings"[:64],
        is_complete=True,
        is_final=False,
        is_verified=False,
    )


# --------------------------------------------------------------------------------------------
# reading back


def _probability_and_measurements(groups: Sequence[Group]) -> tuple[float | None, list[Measurement]]:
    probability: float | None = None
    measurements: list[Measurement] = []
    for m in (m for group in groups for m in group.get_measurements()):
        name = _from_dicom_code(m.name)
        if (name.value, name.scheme) == (codes.PROBABILITY.value, codes.PROBABILITY.scheme):
            probability = float(m.value)
        else:
            measurements.append(Measurement(name=name, value=float(m.value), unit=_from_dicom_code(m.unit)))
    return probability, measurements


def _fl(value: np.float32) -> float:
    """A Graphic Data (FL) value as the shortest decimal that round-trips through float32."""
    return float(str(np.float32(value)))


def _read_region(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> Point3D | Point2D | Polygon | None:
    roi = group.roi
    if isinstance(roi, hd.sr.ImageRegion3D):
        data = np.asarray(roi.value, dtype=np.float32).reshape(-1, 3)
        if roi.graphic_type == hd.sr.GraphicTypeValues3D.POINT:
            x, y, z = (_fl(v) for v in data[0])
            return Point3D(x=x, y=y, z=z, frame_of_reference_uid=str(roi.frame_of_reference_uid))
        return None
    if isinstance(roi, hd.sr.ImageRegion):
        data = np.asarray(roi.value, dtype=np.float32).reshape(-1, 2)
        ref = roi.ContentSequence[0].ReferencedSOPSequence[0]  # the SELECTED FROM image item
        uid = str(ref.ReferencedSOPInstanceUID)
        frames = ref.get("ReferencedFrameNumber")
        frame = (
            int(frames[0] if isinstance(frames, Sequence) and not isinstance(frames, str) else frames)
            if frames
            else None
        )
        if roi.graphic_type == hd.sr.GraphicTypeValues.POINT:
            return Point2D(sop_instance_uid=uid, frame_number=frame, x=_fl(data[0][0]), y=_fl(data[0][1]))
        if roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE:
            points = [(_fl(x), _fl(y)) for x, y in data]
            if len(points) > 3 and points[0] == points[-1]:
                points = points[:-1]
            return Polygon(sop_instance_uid=uid, frame_number=frame, points=points)
    return None


def tracked_together(regions: Sequence[R], others: Sequence[G]) -> tuple[list[tuple[R, list[G]]], list[G]]:
    """Each region group with the region-less groups of the same tracked entity, and the others left.

    Groups sharing a Tracking Unique Identifier (TID 4108) describe one finding: the writer puts a
    finding's region in a TID 1410 group and its measurements in a TID 1501 group beside it.
    """
    uids = {str(g.tracking_uid) for g in regions if g.tracking_uid is not None}
    joined: dict[str, list[G]] = {}
    left: list[G] = []
    for group in others:
        uid = str(group.tracking_uid) if group.tracking_uid is not None else None
        if uid is not None and uid in uids:
            joined.setdefault(uid, []).append(group)
        else:
            left.append(group)
    return [(g, joined.get(str(g.tracking_uid), []) if g.tracking_uid is not None else []) for g in regions], left


def read_measurement_report(sr: Dataset) -> Findings:
    """The findings an SR written by :func:`build_measurement_report` carries.

    Boxes come back as polygons; measurement groups this writer does not produce are skipped; the
    groups of one tracked finding (region and measurements) come back as one finding.
    """
    document = sr if isinstance(sr, hd.sr.Comprehensive3DSR) else hd.sr.Comprehensive3DSR.from_dataset(sr)
    report = document.content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise ValueError("the SR does not hold a TID 1500 Measurement Report")
    classifications: list[Classification] = []
    findings: list[Finding] = []
    with_region, without = tracked_together(report.get_planar_roi_measurement_groups(),
                                            report.get_image_measurement_groups())  # fmt: skip
    for group in without:
        probability, measurements = _probability_and_measurements([group])
        if group.finding_type is None:
            continue
        code = _from_dicom_code(group.finding_type)
        label = group.tracking_identifier or None
        if label and label.startswith("Classification ") and probability is not None and not measurements:
            classifications.append(Classification(code=code, probability=probability))
        else:
            findings.append(Finding(code=code, probability=probability, label=label, measurements=measurements,
                                    finding_site=_site([group]),
                                    below_operating_point=_below_operating_point(group)))  # fmt: skip
    for roi_group, joined in with_region:
        if roi_group.finding_type is None:
            continue
        parts: list[Group] = [roi_group, *joined]
        probability, measurements = _probability_and_measurements(parts)
        findings.append(
            Finding(
                code=_from_dicom_code(roi_group.finding_type),
                probability=probability,
                label=roi_group.tracking_identifier or None,
                finding_site=_site(parts),
                region=_read_region(roi_group),
                measurements=measurements,
                below_operating_point=any(_below_operating_point(p) for p in parts),
            )
        )
    evidence = document.get("CurrentRequestedProcedureEvidenceSequence", [])
    series = sorted({str(ref.SeriesInstanceUID) for study in evidence for ref in study.ReferencedSeriesSequence})
    return Findings(evaluated_series=series, classifications=classifications, findings=findings)


def _site(groups: Sequence[Group]) -> Code | None:
    sites = [site for group in groups for site in group.finding_sites]
    return _from_dicom_code(sites[0].value) if sites else None
