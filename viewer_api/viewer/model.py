"""What the study viewer shows: the header, the series and their images in display order.

Built from the index alone (the query engine for study and series attributes, the stored DICOM
JSON for positions and windows), always through the caller's scope, and embedded in the viewer
page so the first image can be requested without another round trip.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine

from pacs.access import AccessScope
from pacs.errors import NotFound
from pacs.query import Level, QueryRequest, run_query
from pacs.retrieve import find_instances, instance_metadata

# Window presets (center, width) by modality; CT in Hounsfield units.
PRESETS: dict[str, list[dict[str, Any]]] = {
    "CT": [
        {"name": "Lung", "center": -600, "width": 1500},
        {"name": "Mediastinum", "center": 40, "width": 400},
        {"name": "Bone", "center": 400, "width": 1800},
        {"name": "Brain", "center": 40, "width": 80},
        {"name": "Abdomen", "center": 60, "width": 400},
    ],
    "MR": [{"name": "T1", "center": 500, "width": 1000}, {"name": "T2", "center": 300, "width": 800}],
    "CR": [{"name": "Bone", "center": 2048, "width": 4096}],
    "DX": [{"name": "Bone", "center": 2048, "width": 4096}],
}


@dataclass(frozen=True, slots=True)
class StudyHeader:
    study_uid: str
    patient_name: str
    patient_id: str
    issuer: str
    birth_date: str
    sex: str
    study_date: str
    study_time: str
    description: str
    accession: str
    modalities: list[str]
    series_count: int
    instance_count: int
    institution: str = ""  # InstitutionName as the modality sent it


@dataclass(slots=True)
class Image:
    sop: str
    frames: int


@dataclass(slots=True)
class SeriesView:
    uid: str
    number: int | None
    description: str
    modality: str
    window: tuple[float, float] | None = None
    images: list[Image] = field(default_factory=list)
    sort_keys: dict[str, tuple[float, int]] = field(default_factory=dict)


@dataclass(slots=True)
class StudyView:
    header: StudyHeader
    series: list[SeriesView]

    def as_json(self) -> dict[str, Any]:
        """The model handed to ``viewer.js``."""
        return {
            "study": asdict(self.header),
            "series": [
                {"uid": s.uid, "number": s.number, "description": s.description, "modality": s.modality,
                 "window": list(s.window) if s.window else None,
                 "presets": PRESETS.get(s.modality, []),
                 "images": [{"sop": i.sop, "frames": i.frames} for i in s.images]}
                for s in self.series if s.images
            ],
        }


def display_name(pn: str) -> str:
    """A DICOM person name for people: ``Yamada^Taro=山田^太郎=…`` → ``Yamada Taro (山田 太郎)``."""
    groups = [" ".join(p for p in g.split("^") if p).strip() for g in pn.split("=")]
    first = groups[0] if groups else ""
    ideographic = groups[1] if len(groups) > 1 else ""
    if first and ideographic:
        return f"{first} ({ideographic})"
    return first or ideographic or (groups[2] if len(groups) > 2 else "")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return str(value)


def study_header(engine: Engine, scope: AccessScope, study_uid: str) -> StudyHeader:
    """The study's header attributes; :class:`NotFound` when it is not visible to ``scope``."""
    matches = list(run_query(engine, QueryRequest(
        level=Level.STUDY, filters={"StudyInstanceUID": study_uid}, scope=scope,
        return_keys=("IssuerOfPatientID", "PatientBirthDate", "PatientSex", "StudyDescription",
                     "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ModalitiesInStudy",
                     "InstitutionName"),
    )))
    if not matches:
        raise NotFound("no such study")
    m = matches[0]
    modalities = m.get("ModalitiesInStudy") or []
    return StudyHeader(
        study_uid=study_uid, patient_name=_text(m.get("PatientName")), patient_id=_text(m.get("PatientID")),
        issuer=_text(m.get("IssuerOfPatientID")), birth_date=_text(m.get("PatientBirthDate")),
        sex=_text(m.get("PatientSex")), study_date=_text(m.get("StudyDate")), study_time=_text(m.get("StudyTime")),
        description=_text(m.get("StudyDescription")), accession=_text(m.get("AccessionNumber")),
        modalities=modalities if isinstance(modalities, list) else [str(modalities)],
        series_count=int(m.get("NumberOfStudyRelatedSeries") or 0),
        instance_count=int(m.get("NumberOfStudyRelatedInstances") or 0),
        institution=_text(m.get("InstitutionName")),
    )


def _value(meta: dict[str, Any], tag: str) -> list[Any] | None:
    elem = meta.get(tag)
    if not isinstance(elem, dict):
        return None
    value = elem.get("Value")
    return value if isinstance(value, list) and value else None


def _position(meta: dict[str, Any]) -> float | None:
    """Distance along the slice normal (PS3.3 C.7.6.2.1.1), for ordering a volume head to foot."""
    ipp, iop = _value(meta, "00200032"), _value(meta, "00200037")
    try:
        if ipp and iop and len(ipp) == 3 and len(iop) == 6:
            r, c = [float(v) for v in iop[:3]], [float(v) for v in iop[3:]]
            normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
            return sum(float(p) * n for p, n in zip(ipp, normal, strict=True))
    except (TypeError, ValueError):
        return None
    return None


def _window(meta: dict[str, Any]) -> tuple[float, float] | None:
    center, width = _value(meta, "00281050"), _value(meta, "00281051")
    try:
        if center and width and float(width[0]) > 0:
            return float(center[0]), float(width[0])
    except (TypeError, ValueError):
        return None
    return None


def study_view(engine: Engine, scope: AccessScope, study_uid: str) -> StudyView:
    """Header, series (in series-number order) and images (by slice position, else instance number)."""
    header = study_header(engine, scope, study_uid)
    series: dict[str, SeriesView] = {}
    for m in run_query(engine, QueryRequest(level=Level.SERIES, filters={"StudyInstanceUID": study_uid},
                                            scope=scope, return_keys=("SeriesDescription",))):
        uid = _text(m.get("SeriesInstanceUID"))
        number = m.get("SeriesNumber")
        series[uid] = SeriesView(uid, int(number) if number not in (None, "") else None,
                                 _text(m.get("SeriesDescription")), _text(m.get("Modality")))
    instances = find_instances(engine, scope, study_uid=study_uid)
    metas: dict[str, dict[str, Any]] = {}
    for text in instance_metadata(engine, scope, study_uid=study_uid):
        meta = json.loads(text)
        sop = _value(meta, "00080018")
        if sop:
            metas[str(sop[0])] = meta
    positions: dict[str, float | None] = {}
    for stored in instances:
        target = series.get(stored.series_uid)
        if target is None or not stored.rows or not stored.number_of_frames:
            continue  # SR, KO, PR... have no pixels to show
        meta = metas.get(stored.sop_uid, {})
        positions[stored.sop_uid] = _position(meta)
        if target.window is None:
            target.window = _window(meta)
        target.images.append(Image(stored.sop_uid, int(stored.number_of_frames)))
        target.sort_keys[stored.sop_uid] = (0.0, stored.instance_number or 0)
    for s in series.values():
        if s.images and all(positions.get(i.sop) is not None for i in s.images) and len(s.images) > 1:
            # Head first (largest z first for axial LPS).
            s.images.sort(key=lambda i: -(positions[i.sop] or 0.0))
        else:
            s.images.sort(key=lambda i: s.sort_keys[i.sop][1])
    ordered = sorted(series.values(), key=lambda s: (s.number is None, s.number or 0, s.uid))
    return StudyView(header, ordered)
