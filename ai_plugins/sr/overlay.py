"""Measurement Report SRs (PS3.16 TID 1500) → what a viewer lists and draws over the images.

:func:`read_report` takes a stored Comprehensive 3D / Comprehensive / Enhanced SR apart: who made
it (TID 4019 Algorithm Identification, else the device's model and software version), when (Content
Date/Time), and each finding: its code, tracking identifier, probability, other measurements and
qualitative evaluations, and its region: a SCOORD on a referenced image (PS3.3 C.18.6) or a
SCOORD3D in a frame of reference (PS3.3 C.18.9). A finding is one measurement group, or a region
group and the region-less groups that share its Tracking Unique Identifier (TID 4108).

:func:`overlay_findings` turns reports into :class:`OverlayFinding` rows in image pixel
coordinates (column, row; (0, 0) is the top-left corner of the top-left pixel, PS3.3 C.18.6.1.2):
2D regions as they are; 3D regions projected onto the nearest slice of the series they were
measured on, using only each image's plane (:class:`ImagePlane`, read from the stored DICOM JSON
by :func:`planes_from_metadata`), never its pixels. A 3D point that reports a diameter becomes a
circle (an ellipse where pixels are not square) of that diameter. Reports are listed newest
first; the older reports of an algorithm that reported again are kept and marked superseded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import highdicom as hd
import numpy as np
from pydantic import BaseModel, ConfigDict
from pydicom.dataset import Dataset

from ai_plugins.sdk import Code, codes
from ai_plugins.sr.tid1500 import tracked_together

__all__ = [
    "SR_STORAGE_CLASSES",
    "ImagePlane",
    "OverlayFinding",
    "OverlayMeasurement",
    "Region2D",
    "Region3D",
    "Report",
    "ReportItem",
    "geometry_series",
    "overlay_findings",
    "planes_from_metadata",
    "read_report",
]

log = logging.getLogger(__name__)

ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SR_STORAGE_CLASSES: frozenset[str] = frozenset({ENHANCED_SR, COMPREHENSIVE_SR, COMPREHENSIVE_3D_SR})
_DOCUMENTS: dict[str, type[hd.sr.EnhancedSR | hd.sr.ComprehensiveSR | hd.sr.Comprehensive3DSR]] = {
    ENHANCED_SR: hd.sr.EnhancedSR,
    COMPREHENSIVE_SR: hd.sr.ComprehensiveSR,
    COMPREHENSIVE_3D_SR: hd.sr.Comprehensive3DSR,
}

_ALGORITHM_NAME = ("111001", "DCM")  # TID 4019
_ALGORITHM_VERSION = ("111003", "DCM")
_TO_MM = {"mm": 1.0, "cm": 10.0, "um": 0.001}

Shape = Literal["point", "multipoint", "polyline", "polygon", "circle", "ellipse"]
Group = (hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
         | hd.sr.MeasurementsAndQualitativeEvaluations)  # fmt: skip


# --------------------------------------------------------------------------------------------
# what the viewer gets


class OverlayMeasurement(BaseModel):
    """One numeric measurement of a finding, with its UCUM unit."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float
    unit: str


class OverlayFinding(BaseModel):
    """One row of the findings panel, and what to draw for it (``points`` empty: nothing to draw)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["finding", "classification"]
    label: str
    text: str
    plugin: str
    code: Code | None = None
    tracking_id: str | None = None
    probability: float | None = None
    measurements: list[OverlayMeasurement] = []
    series_uid: str | None = None
    sop_uid: str | None = None
    frame: int | None = None
    shape: Shape | None = None
    points: list[tuple[float, float]] = []
    projected: bool = False
    distance_mm: float | None = None
    report_uid: str
    finding_key: str = ""  # names the finding within its report (its tracking identifier)
    report_datetime: str | None = None
    superseded: bool = False
    reviewed: bool = False  # from a document a physician released (issue 13), not the AI's own


# --------------------------------------------------------------------------------------------
# what an SR says


@dataclass(frozen=True, slots=True)
class Region2D:
    """A SCOORD on one image (frame): pixel coordinates as written."""

    graphic_type: str
    points: tuple[tuple[float, float], ...]
    sop_uid: str
    frame: int | None


@dataclass(frozen=True, slots=True)
class Region3D:
    """A SCOORD3D: patient coordinates (LPS mm) in a frame of reference."""

    graphic_type: str
    points: tuple[tuple[float, float, float], ...]
    frame_of_reference_uid: str


@dataclass(frozen=True, slots=True)
class ReportItem:
    """One measurement group of a report."""

    kind: Literal["finding", "classification"]
    code: Code | None
    tracking_id: str | None
    algorithm: str | None
    probability: float | None
    measurements: tuple[OverlayMeasurement, ...]
    evaluations: tuple[str, ...]
    region: Region2D | Region3D | None
    source_sops: tuple[str, ...]  # images the measurements cite as their source (TID 300)


@dataclass(frozen=True, slots=True)
class Report:
    """One SR document, reduced to what a viewer shows."""

    sop_uid: str
    series_uid: str
    datetime: str | None  # ISO 8601, from Content Date/Time
    instance_number: int
    algorithm: str  # name@version of the algorithm (the first group's, else the device's)
    algorithm_name: str
    evaluated_series: tuple[str, ...]
    items: tuple[ReportItem, ...] = field(default=())


def _code(concept: Any) -> Code:
    version = getattr(concept, "scheme_version", None)
    return Code(value=str(concept.value)[:256], scheme=str(concept.scheme_designator)[:16] or "99LOCAL",
                meaning=str(concept.meaning)[:64] or str(concept.value)[:64],
                scheme_version=str(version)[:16] if version else None)  # fmt: skip


def _is(concept: Any, key: tuple[str, str]) -> bool:
    return (str(concept.value), str(concept.scheme_designator)) == key


def _algorithm_of(group: Sequence[Dataset]) -> str | None:
    """``name@version`` from the group's TID 4019 items (direct children of the group container)."""
    name = version = None
    for item in group[0].get("ContentSequence", []):
        concept = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
        if concept is None or item.get("ValueType") != "TEXT":
            continue
        key = (str(concept.CodeValue), str(concept.CodingSchemeDesignator))
        if key == _ALGORITHM_NAME:
            name = str(item.TextValue)
        elif key == _ALGORITHM_VERSION:
            version = str(item.TextValue)
    if not name:
        return None
    return f"{name}@{version}" if version else name


def _sop_and_frame(item: Dataset) -> tuple[str, int | None] | None:
    refs = item.get("ReferencedSOPSequence")
    if not refs:
        return None
    ref = refs[0]
    frames = ref.get("ReferencedFrameNumber")
    if frames is None or frames == "":
        return str(ref.ReferencedSOPInstanceUID), None
    first = frames[0] if isinstance(frames, Sequence) and not isinstance(frames, str) else frames
    return str(ref.ReferencedSOPInstanceUID), int(first)


def _region(roi: hd.sr.ImageRegion | hd.sr.ImageRegion3D | None) -> Region2D | Region3D | None:
    if roi is None:
        return None
    graphic_type = str(roi.GraphicType)
    data = np.asarray(roi.GraphicData, dtype=np.float64)
    if isinstance(roi, hd.sr.ImageRegion3D):
        xyz = data.reshape(-1, 3)
        return Region3D(graphic_type, tuple((float(x), float(y), float(z)) for x, y, z in xyz),
                        str(roi.ReferencedFrameOfReferenceUID))  # fmt: skip
    selected = next((i for i in roi.get("ContentSequence", []) if "ReferencedSOPSequence" in i), None)
    where = _sop_and_frame(selected) if selected is not None else None
    if where is None:
        return None
    xy = data.reshape(-1, 2)
    return Region2D(graphic_type, tuple((float(x), float(y)) for x, y in xy), where[0], where[1])


def _measurements(groups: Sequence[Group]) -> tuple[float | None, list[OverlayMeasurement], list[str]]:
    probability: float | None = None
    out: list[OverlayMeasurement] = []
    sources: list[str] = []
    for m in (m for group in groups for m in group.get_measurements()):
        if m.value is None:
            continue
        if _is(m.name, (codes.PROBABILITY.value, codes.PROBABILITY.scheme)):
            probability = float(m.value)
        else:
            out.append(OverlayMeasurement(name=str(m.name.meaning), value=float(m.value), unit=str(m.unit.value)))
        for image in m.referenced_images or []:
            sources.extend(str(r.ReferencedSOPInstanceUID) for r in image.get("ReferencedSOPSequence", []))
    return probability, out, sources


def _evaluations(groups: Sequence[Group]) -> list[str]:
    return [f"{e.name.meaning}: {getattr(e.value, 'meaning', e.value)}"
            for group in groups for e in group.get_qualitative_evaluations()]  # fmt: skip


def _item(group: Group, region: Region2D | Region3D | None, joined: Sequence[Group] = ()) -> ReportItem:
    """One finding: ``group`` with the region-less groups ``joined`` to it by their tracking UID."""
    groups = [group, *joined]
    probability, measurements, sources = _measurements(groups)
    label = group.tracking_identifier or None
    # The writer (tid1500) tracks study-level classifications as "Classification <n>".
    classification = (region is None and label is not None and label.startswith("Classification ")
                      and probability is not None and not measurements)  # fmt: skip
    return ReportItem(
        kind="classification" if classification else "finding",
        code=_code(group.finding_type) if group.finding_type is not None else None,
        tracking_id=label,
        algorithm=next((a for a in map(_algorithm_of, groups) if a), None),
        probability=probability,
        measurements=tuple(measurements),
        evaluations=tuple(_evaluations(groups)),
        region=region,
        source_sops=tuple(dict.fromkeys(sources)),
    )


def _datetime(ds: Dataset) -> str | None:
    for date_kw, time_kw in (("ContentDate", "ContentTime"), ("InstanceCreationDate", "InstanceCreationTime"),
                             ("SeriesDate", "SeriesTime"), ("StudyDate", "StudyTime")):  # fmt: skip
        date = str(ds.get(date_kw, "") or "")
        if len(date) == 8 and date.isdigit():
            t = str(ds.get(time_kw, "") or "").split(".")[0].ljust(6, "0")[:6]
            t = t if t.isdigit() else "000000"
            return f"{date[:4]}-{date[4:6]}-{date[6:]}T{t[:2]}:{t[2:4]}:{t[4:]}"
    return None


def read_report(ds: Dataset) -> Report | None:
    """The findings of one SR, or ``None`` when it is no TID 1500 Measurement Report."""
    document_class = _DOCUMENTS.get(str(ds.get("SOPClassUID", "")))
    if document_class is None:
        return None
    try:
        document = document_class.from_dataset(ds, copy=False)
        content = document.content
        if not isinstance(content, hd.sr.MeasurementReport):
            return None
        # a finding's region and its measurements may be two groups of one tracking UID (tid1500)
        planar, rest = tracked_together(content.get_planar_roi_measurement_groups(),
                                        content.get_image_measurement_groups())  # fmt: skip
        volumetric, rest = tracked_together(content.get_volumetric_roi_measurement_groups(), rest)
        items = [_item(g, None) for g in rest]
        items += [_item(g, _region(g.roi), joined) for g, joined in planar]
        items += [_item(g, None, joined) for g, joined in volumetric]
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        log.warning("SR %s: not readable as a TID 1500 report: %s", ds.get("SOPInstanceUID", "?"), exc)
        return None
    device_model = str(ds.get("ManufacturerModelName", "") or ds.get("Manufacturer", "") or "unknown")
    software = ds.get("SoftwareVersions", "")
    software = str(software[0] if isinstance(software, Sequence) and not isinstance(software, str) else software)
    algorithm = next((i.algorithm for i in items if i.algorithm), None)
    algorithm = algorithm or (f"{device_model}@{software}" if software else device_model)
    evidence = ds.get("CurrentRequestedProcedureEvidenceSequence", [])
    series = tuple(dict.fromkeys(str(s.SeriesInstanceUID) for study in evidence
                                 for s in study.get("ReferencedSeriesSequence", [])))  # fmt: skip
    return Report(
        sop_uid=str(ds.SOPInstanceUID),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        datetime=_datetime(ds),
        instance_number=int(ds.get("InstanceNumber", 0) or 0),
        algorithm=algorithm,
        algorithm_name=algorithm.split("@", 1)[0],
        evaluated_series=series,
        items=tuple(items),
    )


# --------------------------------------------------------------------------------------------
# image geometry from the stored DICOM JSON (PS3.18 F.2)


@dataclass(frozen=True, slots=True)
class ImagePlane:
    """Where one image (one frame) lies in its frame of reference (PS3.3 C.7.6.2)."""

    sop_uid: str
    series_uid: str
    frame: int
    frame_of_reference_uid: str
    position: tuple[float, float, float]  # centre of the top-left pixel, LPS mm
    row_direction: tuple[float, float, float]  # towards increasing column
    column_direction: tuple[float, float, float]  # towards increasing row
    spacing: tuple[float, float]  # (between rows, between columns) mm
    rows: int
    columns: int

    @property
    def normal(self) -> np.ndarray:
        return np.cross(np.array(self.row_direction), np.array(self.column_direction))

    def offset(self, point: Sequence[float]) -> float:
        """Signed distance of ``point`` from this plane along its normal."""
        return float(np.dot(np.asarray(point, dtype=np.float64) - np.array(self.position), self.normal))

    def to_pixels(self, point: Sequence[float]) -> tuple[float, float]:
        """``point`` projected onto this plane, as (column, row) image coordinates (SCOORD convention)."""
        d = np.asarray(point, dtype=np.float64) - np.array(self.position)
        col = float(np.dot(d, np.array(self.row_direction))) / self.spacing[1]
        row = float(np.dot(d, np.array(self.column_direction))) / self.spacing[0]
        return col + 0.5, row + 0.5  # pixel centres lie at half-integers (PS3.3 C.18.6.1.2)

    def contains(self, pixel: tuple[float, float]) -> bool:
        return 0.0 <= pixel[0] <= self.columns and 0.0 <= pixel[1] <= self.rows


def _values(meta: Mapping[str, Any], tag: str) -> list[Any]:
    element = meta.get(tag)
    value = element.get("Value") if isinstance(element, dict) else None
    return value if isinstance(value, list) else []


def _first(meta: Mapping[str, Any], tag: str) -> Any:
    values = _values(meta, tag)
    return values[0] if values else None


def _floats(values: Sequence[Any], n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def _in_group(groups: Any, sequence_tag: str, tag: str) -> list[Any]:
    """A value nested in a functional group (PS3.3 C.7.6.16): ``groups[0][sequence_tag][0][tag]``."""
    item = groups if isinstance(groups, dict) else {}
    inner = _first(item, sequence_tag)
    return _values(inner, tag) if isinstance(inner, dict) else []


def planes_from_metadata(meta: Mapping[str, Any]) -> list[ImagePlane]:
    """The planes of one instance's frames, from its DICOM JSON (empty when it has no geometry)."""
    sop, series, frame_of_reference = (_first(meta, t) for t in ("00080018", "0020000E", "00200052"))
    rows, columns = _first(meta, "00280010"), _first(meta, "00280011")
    if not (sop and series and frame_of_reference and isinstance(rows, int) and isinstance(columns, int)):
        return []
    shared = _first(meta, "52009229")
    per_frame = _values(meta, "52009230")

    def plane(frame: int, ipp: Sequence[Any], iop: Sequence[Any], spacing: Sequence[Any]) -> ImagePlane | None:
        position, orientation, pixel = _floats(ipp, 3), _floats(iop, 6), _floats(spacing, 2)
        if position is None or orientation is None or pixel is None or min(pixel) <= 0:
            return None
        return ImagePlane(
            sop_uid=str(sop), series_uid=str(series), frame=frame, frame_of_reference_uid=str(frame_of_reference),
            position=(position[0], position[1], position[2]),
            row_direction=(orientation[0], orientation[1], orientation[2]),
            column_direction=(orientation[3], orientation[4], orientation[5]),
            spacing=(pixel[0], pixel[1]), rows=rows, columns=columns,
        )

    if per_frame:  # enhanced multi-frame: per-frame positions, shared or per-frame orientation and spacing
        out: list[ImagePlane] = []
        for n, group in enumerate(per_frame, start=1):
            ipp = _in_group(group, "00209113", "00200032")
            iop = _in_group(group, "00209116", "00200037") or _in_group(shared, "00209116", "00200037")
            spacing = _in_group(group, "00289110", "00280030") or _in_group(shared, "00289110", "00280030")
            p = plane(n, ipp, iop, spacing)
            if p is not None:
                out.append(p)
        return out
    single = plane(1, _values(meta, "00200032"), _values(meta, "00200037"), _values(meta, "00280030"))
    frames = _first(meta, "00280008")
    if single is None or (frames is not None and int(frames) > 1):
        return []  # a multi-frame image without per-frame positions has no one plane per frame
    return [single]


# --------------------------------------------------------------------------------------------
# reports → overlay rows


def geometry_series(reports: Iterable[Report], series_of: Mapping[str, str]) -> list[str] | None:
    """The series whose image planes projecting the reports' 3D regions needs (``None``: any series).

    Those are the series of the images the measurements cite as their source, then the evaluated
    series; a report with 3D regions that names neither needs every series of the study.
    """
    wanted: dict[str, None] = {}
    for report in reports:
        regions = [i for i in report.items if isinstance(i.region, Region3D)]
        if not regions:
            continue
        named = [series_of[s] for i in regions for s in i.source_sops if s in series_of]
        named += report.evaluated_series
        if not named:
            return None
        wanted.update(dict.fromkeys(named))
    return list(wanted)


def _fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _label(item: ReportItem) -> str:
    return item.code.meaning if item.code else (item.tracking_id or "Finding")


def _text(item: ReportItem, note: str) -> str:
    parts: list[str] = []
    if item.tracking_id and item.kind == "finding" and item.tracking_id != _label(item):
        parts.append(item.tracking_id)
    if item.kind == "classification":
        parts.append("study level")
    if item.probability is not None:
        parts.append(f"probability {item.probability:.2f}")
    parts += [f"{m.name} {_fmt(m.value)}" + (f" {m.unit}" if m.unit != "1" else "") for m in item.measurements]
    parts += list(item.evaluations)
    if note:
        parts.append(note)
    return " · ".join(parts)


def _diameter_mm(item: ReportItem) -> float | None:
    for m in item.measurements:
        scale = _TO_MM.get(m.unit)
        if "diameter" in m.name.lower() and scale is not None and m.value > 0:
            return m.value * scale
    return None


def _shape_2d(graphic_type: str, points: Sequence[tuple[float, float]]) -> tuple[Shape, list[tuple[float, float]]]:
    pts = [(round(x, 2), round(y, 2)) for x, y in points]
    if graphic_type == "POINT":
        return "point", pts[:1]
    if graphic_type == "MULTIPOINT":
        return "multipoint", pts
    if graphic_type == "CIRCLE":
        return "circle", pts[:2]
    if graphic_type in ("ELLIPSE", "ELLIPSOID"):  # an ellipsoid projected: its first two axes
        return "ellipse", pts[:4]
    if len(pts) > 3 and pts[0] == pts[-1]:
        return "polygon", pts[:-1]
    return ("polygon" if graphic_type == "POLYGON" else "polyline"), pts


class _Planes:
    """The study's image planes, grouped for nearest-slice look-ups."""

    def __init__(self, planes: Iterable[ImagePlane]) -> None:
        self.by_series: dict[str, list[ImagePlane]] = {}
        for p in planes:
            self.by_series.setdefault(p.series_uid, []).append(p)

    def series_for(self, frame_of_reference: str, preferred: Sequence[str]) -> list[ImagePlane]:
        """The planes of the first preferred series in ``frame_of_reference`` (else of any such series)."""
        for uid in [*preferred, *sorted(self.by_series)]:
            planes = [p for p in self.by_series.get(uid, []) if p.frame_of_reference_uid == frame_of_reference]
            if planes:
                return planes
        return []


def _tolerance(planes: Sequence[ImagePlane], normal: np.ndarray) -> float:
    """How far from the nearest slice a point may lie and still be drawn: one slice interval."""
    offsets = sorted({round(float(np.dot(np.array(p.position), normal)), 3) for p in planes})
    gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False) if b - a > 1e-3]
    return float(np.median(gaps)) if gaps else 10.0


def _project(item: ReportItem, region: Region3D, planes: Sequence[ImagePlane]) -> dict[str, Any]:
    """Where a 3D region shows: on the slice nearest its centre, or nowhere (with a note why)."""
    if not planes:
        return {"note": "no images in its frame of reference"}
    centre = np.mean(np.array(region.points), axis=0)
    nearest = min(planes, key=lambda p: abs(p.offset(centre)))
    distance = abs(nearest.offset(centre))
    if distance > _tolerance(planes, nearest.normal) + 1e-6:
        return {"note": f"{distance:.1f} mm from the nearest slice", "distance_mm": round(distance, 2)}
    pixels = [nearest.to_pixels(p) for p in region.points]
    if not any(nearest.contains(p) for p in pixels):
        return {"note": "outside the images", "distance_mm": round(distance, 2)}
    where = {"series_uid": nearest.series_uid, "sop_uid": nearest.sop_uid, "frame": nearest.frame,
             "projected": True, "distance_mm": round(distance, 2)}  # fmt: skip
    diameter = _diameter_mm(item)
    if region.graphic_type == "POINT" and diameter is not None:
        (cx, cy), radius = pixels[0], diameter / 2
        rx, ry = radius / nearest.spacing[1], radius / nearest.spacing[0]
        if math.isclose(rx, ry, rel_tol=1e-3):
            return where | {"shape": "circle", "points": [(round(cx, 2), round(cy, 2)), (round(cx + rx, 2),
                                                                                        round(cy, 2))]}  # fmt: skip
        axes = [(cx - rx, cy), (cx + rx, cy), (cx, cy - ry), (cx, cy + ry)]
        if ry > rx:
            axes = axes[2:] + axes[:2]
        return where | {"shape": "ellipse", "points": [(round(x, 2), round(y, 2)) for x, y in axes]}
    shape, pts = _shape_2d(region.graphic_type, pixels)
    return where | {"shape": shape, "points": pts}


def _row(item: ReportItem, report: Report, planes: _Planes, series_of: Mapping[str, str],
         superseded: bool, key: str) -> OverlayFinding:  # fmt: skip
    where: dict[str, Any] = {}
    region = item.region
    if isinstance(region, Region2D):
        shape, pts = _shape_2d(region.graphic_type, region.points)
        where = {"series_uid": series_of.get(region.sop_uid), "sop_uid": region.sop_uid, "frame": region.frame or 1,
                 "shape": shape, "points": pts}  # fmt: skip
        if region.sop_uid not in series_of:
            where = {"note": "its image is not in this study"}
    elif isinstance(region, Region3D):
        preferred = [series_of[s] for s in item.source_sops if s in series_of] + list(report.evaluated_series)
        where = _project(item, region, planes.series_for(region.frame_of_reference_uid, preferred))
    note = where.pop("note", "")
    if superseded:
        note = "; ".join(n for n in (note, "earlier report") if n)
    return OverlayFinding(
        kind=item.kind, label=_label(item), text=_text(item, note), plugin=item.algorithm or report.algorithm,
        code=item.code, tracking_id=item.tracking_id, probability=item.probability,
        measurements=list(item.measurements), report_uid=report.sop_uid, finding_key=key,
        report_datetime=report.datetime,
        superseded=superseded, **where,
    )


def overlay_findings(reports: Iterable[Report], planes: Iterable[ImagePlane],
                     series_of: Mapping[str, str]) -> list[OverlayFinding]:  # fmt: skip
    """Every report's rows, newest report first; an algorithm's older reports are marked superseded.

    ``series_of`` maps the study's SOP Instance UIDs to their series (images outside it cannot be
    drawn); ``planes`` are the image planes :func:`geometry_series` asked for.
    """
    ordered = sorted(reports, key=lambda r: (r.datetime or "", r.instance_number, r.sop_uid), reverse=True)
    grouped = _Planes(planes)
    seen: set[str] = set()
    rows: list[OverlayFinding] = []
    for report in ordered:
        superseded = report.algorithm_name in seen
        seen.add(report.algorithm_name)
        items = sorted(report.items, key=lambda i: i.kind != "classification")
        rows += [_row(item, report, grouped, series_of, superseded, item.tracking_id or f"item {n}")
                 for n, item in enumerate(items, start=1)]
    return rows
