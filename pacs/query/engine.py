"""The one query engine: C-FIND and QIDO-RS both call :func:`run_query`.

It answers from index columns only (plus, at IMAGE level, the stored DICOM JSON of each instance
for attributes that have no column), always bounded by the caller's :class:`AccessScope`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from sqlalchemy import Engine, Select, exists, func, select
from sqlalchemy import inspect as sa_inspect

from pacs.access import AccessScope
from pacs.errors import InvalidQuery
from pacs.index.models import Instance, Patient, Series, Study, WithheldInstance
from pacs.query.attributes import CATALOGUE, QIDO_DEFAULTS, UNIQUE_KEY, Attribute, Level, resolve_keyword, visible_at
from pacs.query.matching import value_condition

_MAX_LIMIT = 100_000


@dataclass(frozen=True)
class QueryRequest:
    """One query. ``filters`` hold DICOM-encoded query values by keyword (or 8-digit tag)."""

    level: Level
    filters: Mapping[str, str] = field(default_factory=dict)
    return_keys: Sequence[str] = ()
    include_all: bool = False
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    scope: AccessScope = field(default_factory=AccessScope.everything)


@dataclass
class Match:
    """One matching entity with the values the index holds for it."""

    level: Level
    values: dict[str, Any]  # keyword -> str | int | list[str] | None
    requested: tuple[str, ...]  # filter + return keys, in order, for C-FIND
    extra_json: dict[str, Any] | None = None  # IMAGE level: the instance's stored DICOM JSON
    include_all: bool = False  # QIDO includefield=all: at IMAGE level, every stored attribute

    def get(self, keyword: str) -> Any:
        return self.values.get(keyword)

    # --- C-FIND ------------------------------------------------------------------------------

    def to_dataset(self) -> Dataset:
        """The identifier of a C-FIND response: every requested key, empty when unknown."""
        ds = Dataset()
        keys = list(dict.fromkeys((*self.requested, *_uids_down_to(self.level))))
        non_ascii = False
        for keyword in keys:
            if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
                continue
            value = self._value_for(keyword)
            if value is None or value == "":
                setattr(ds, keyword, [] if dictionary_VR(keyword) == "SQ" else None)
                continue
            if isinstance(value, list):
                value = [str(v) for v in value]
                non_ascii |= any(not v.isascii() for v in value)
            elif isinstance(value, str):
                non_ascii |= not value.isascii()
            setattr(ds, keyword, value)
        if non_ascii:
            ds.SpecificCharacterSet = "ISO_IR 192"
        return ds

    # --- QIDO-RS -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """PS3.18 F.2 DICOM JSON with the QIDO defaults of the level plus every requested key."""
        out: dict[str, Any] = {"00080005": {"vr": "CS", "Value": ["ISO_IR 192"]}}
        keys = dict.fromkeys((*QIDO_DEFAULTS[self.level], *self.requested))
        if self.extra_json is not None and self.include_all:
            for hex_key, elem in self.extra_json.items():
                out.setdefault(hex_key, elem)
        for keyword in keys:
            tag = tag_for_keyword(keyword)
            if tag is None or keyword == "QueryRetrieveLevel":
                continue
            hex_tag = f"{tag:08X}"
            if keyword not in self.values and self.extra_json is not None and hex_tag in self.extra_json:
                out[hex_tag] = self.extra_json[hex_tag]
                continue
            out[hex_tag] = _json_element(dictionary_VR(tag), self.values.get(keyword))
        if self.level is not Level.PATIENT:
            out["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
        return dict(sorted(out.items()))

    def _value_for(self, keyword: str) -> Any:
        if keyword in self.values:
            return self.values[keyword]
        if self.extra_json is not None:
            tag = tag_for_keyword(keyword)
            elem = self.extra_json.get(f"{tag:08X}") if tag is not None else None
            if elem and "Value" in elem and elem.get("vr") not in ("SQ", "PN"):
                vals = elem["Value"]
                return vals[0] if len(vals) == 1 else vals
            if elem and elem.get("vr") == "PN" and "Value" in elem:
                name = elem["Value"][0]
                return "=".join(name.get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")).rstrip("=")
        return None


def _uids_down_to(level: Level) -> tuple[str, ...]:
    return tuple(UNIQUE_KEY[lv] for lv in Level if 0 < lv.depth <= level.depth) if level is not Level.PATIENT \
        else ("PatientID",)


def _json_element(vr: str, value: Any) -> dict[str, Any]:
    if value is None or value == "" or value == []:
        return {"vr": vr}
    if vr == "PN":
        groups = str(value).split("=")
        name = {k: g for k, g in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False) if g}
        return {"vr": vr, "Value": [name]} if name else {"vr": vr}
    if vr in ("IS", "US", "UL", "SS", "SL"):
        return {"vr": vr, "Value": [int(v) for v in (value if isinstance(value, list) else [value])]}
    if vr == "DS":
        return {"vr": vr, "Value": [float(v) for v in (value if isinstance(value, list) else [value])]}
    if isinstance(value, list):
        return {"vr": vr, "Value": [str(v) for v in value]}
    return {"vr": vr, "Value": [str(value)]}


# --- Compilation ---------------------------------------------------------------------------------


def _parse_filters(request: QueryRequest) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for key, value in request.filters.items():
        keyword = resolve_keyword(key)
        parsed[keyword] = _storable("" if value is None else str(value), keyword)
    return parsed


def _storable(value: str, keyword: str) -> str:
    """``value``, unless it holds what no index value can: a NUL inside it (trailing NULs and spaces
    are DICOM padding) or text that is not Unicode (lone surrogates). PostgreSQL refuses both."""
    if "\x00" in value.strip(" \x00"):
        raise InvalidQuery(f"{keyword} value {value[:64]!r} holds a NUL character, which no stored value holds")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidQuery(f"{keyword} value {value[:64]!r} is not valid Unicode text") from None
    return value


def _condition(attr: Attribute, value: str, dialect: str, fuzzy: bool, scope: AccessScope, *,
               patient_table: bool = False) -> Any:  # fmt: skip
    column = attr.patient_column if patient_table and attr.patient_column is not None else attr.column
    norm = attr.norm_column
    if patient_table and attr.keyword == "PatientName":
        norm = Patient.patient_name_norm
    if attr.keyword == "ModalitiesInStudy":  # of the series the caller may see (withheld results are not)
        cond = value_condition(Series.modality, None, "CS", value, attr.keyword, dialect)
        return None if cond is None else exists().where(Series.study_fk == Study.id, cond, scope.series_filter())
    if column is None:
        return None  # return-only attribute (counts)
    return value_condition(column, norm, attr.vr, value, attr.keyword, dialect, fuzzy and attr.vr == "PN")


def _base(level: Level) -> Any:
    if level is Level.PATIENT:
        return select(Patient)
    if level is Level.STUDY:
        return select(Study)
    if level is Level.SERIES:
        return select(Series, Study).join(Study, Study.id == Series.study_fk)
    return (
        select(Instance, Series, Study)
        .join(Series, Series.id == Instance.series_fk)
        .join(Study, Study.id == Instance.study_fk)
    )


def compile_query(request: QueryRequest, dialect: str) -> tuple[Select[Any], dict[str, str], tuple[str, ...]]:
    """The SELECT for ``request``; also the parsed filters and the keys to return."""
    level = request.level
    filters = _parse_filters(request)
    returns = tuple(resolve_keyword(k) for k in request.return_keys)
    stmt = _base(level)
    study_conds: list[Any] = []
    series_conds: list[Any] = []
    instance_conds: list[Any] = []
    for keyword, value in filters.items():
        attr = CATALOGUE.get(keyword)
        if attr is None:
            continue  # not matchable here: returned (empty or from metadata), not matched
        cond = _condition(attr, value, dialect, request.fuzzy, request.scope, patient_table=level is Level.PATIENT)
        if cond is None:
            continue
        if level is Level.PATIENT:
            if attr.level is Level.PATIENT:
                stmt = stmt.where(cond)
            else:
                study_conds.append(cond) if attr.level is Level.STUDY else series_conds.append(cond)
            continue
        if attr.level.depth <= level.depth:
            stmt = stmt.where(cond)
        elif attr.level is Level.SERIES:
            series_conds.append(cond)
        else:
            instance_conds.append(cond)
    if instance_conds:
        owner = Series.id if level is Level.SERIES else Study.id
        fk = Instance.series_fk if level is Level.SERIES else Instance.study_fk
        stmt = stmt.where(exists().where(fk == owner, *instance_conds))
    if series_conds and level is not Level.PATIENT:
        stmt = stmt.where(exists().where(Series.study_fk == Study.id, *series_conds))
    if level is Level.PATIENT:
        sub = [Study.patient_fk == Patient.id, request.scope.study_filter(), *study_conds]
        if series_conds:
            sub.append(exists().where(Series.study_fk == Study.id, *series_conds))
        stmt = stmt.where(Patient.partition_fk == request.scope.partition)
        if study_conds or series_conds or not request.scope.all_studies or request.scope.hidden_study_uids:
            stmt = stmt.where(exists().where(*sub))
        stmt = stmt.order_by(Patient.patient_name_norm, Patient.id)
    else:
        stmt = stmt.where(request.scope.study_filter())
        if level is Level.SERIES:
            stmt = stmt.where(request.scope.series_filter())
        elif level is Level.IMAGE:
            stmt = stmt.where(request.scope.instance_filter())
        if level is Level.STUDY:
            stmt = stmt.order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())
        elif level is Level.SERIES:
            stmt = stmt.order_by(Study.id, Series.series_number, Series.id)
        else:
            stmt = stmt.order_by(Series.id, Instance.instance_number, Instance.id)
    if request.limit is not None:
        if not 0 <= request.limit <= _MAX_LIMIT:
            raise InvalidQuery(f"limit must be between 0 and {_MAX_LIMIT}")
        stmt = stmt.limit(request.limit)
    if request.offset:
        if request.offset < 0:
            raise InvalidQuery("offset must not be negative")
        stmt = stmt.offset(request.offset)
    requested = tuple(dict.fromkeys((*filters.keys(), *returns)))
    return stmt, filters, requested


#: The mapped classes a level's statement selects (:func:`_base`), in its column order.
_ENTITIES: dict[Level, tuple[type[Any], ...]] = {
    Level.PATIENT: (Patient,),
    Level.STUDY: (Study,),
    Level.SERIES: (Series, Study),
    Level.IMAGE: (Instance, Series, Study),
}


def _attribute_keys(model: type[Any]) -> tuple[str, ...]:
    """The mapped attribute names of ``model``'s table columns, in table order."""
    keys = _KEYS.get(model)
    if keys is None:
        mapper = sa_inspect(model)
        keys = _KEYS[model] = tuple(mapper.get_property_by_column(c).key for c in model.__table__.columns)
    return keys


_KEYS: dict[type[Any], tuple[str, ...]] = {}


def _entity_rows(result: Any, models: tuple[type[Any], ...]) -> list[tuple[SimpleNamespace, ...]]:
    """The rows of an entity SELECT run on a Core connection, each as one read-only record per
    entity with the mapped attribute names (``row[-1].study_uid``). A search only reads column values:
    the ORM's identity map and instance state cost a fifth of a QIDO-RS request's CPU for nothing."""
    spans = []
    start = 0
    for model in models:
        keys = _attribute_keys(model)
        spans.append((keys, start, start + len(keys)))
        start += len(keys)
    return [
        tuple(SimpleNamespace(**dict(zip(keys, row[a:b], strict=True))) for keys, a, b in spans)
        for row in result
    ]


def run_query(engine: Engine, request: QueryRequest) -> Iterator[Match]:
    """Every match of ``request``, in a stable order, as :class:`Match` objects."""
    stmt, _filters, requested = compile_query(request, engine.dialect.name)
    level = request.level
    if request.include_all:
        requested = tuple(dict.fromkeys((*requested, *visible_at(level).keys())))
    with engine.connect() as conn:
        rows = _entity_rows(conn.execute(stmt), _ENTITIES[level])
        patient_counts = _visible_patient_counts(conn, request, rows) if level is Level.PATIENT else {}
        recount = _visible_study_contents(conn, request.scope, rows) if level is not Level.PATIENT else {}
    for row in rows:
        match = _match(level, row, requested, patient_counts)
        match.include_all = request.include_all
        if recount:
            match.values.update(recount.get(match.values["StudyInstanceUID"], {}))
        yield match


def _visible_study_contents(conn: Any, scope: AccessScope, rows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Study counts and modalities over the instances the caller may see, when the scope withholds
    some (``AccessScope.withhold_results``, or withheld instances in them): the stored ones would betray
    the withheld objects."""
    if not scope.recounts or not rows:
        return {}
    studies = {r[-1].id: r[-1].study_uid for r in rows}
    if not scope.withhold_results:  # only the studies that withhold something from this scope
        withholding = set(conn.execute(select(WithheldInstance.study_uid).where(
            WithheldInstance.study_uid.in_(sorted(studies.values())),
            WithheldInstance.reason.in_(sorted(scope.withheld_reasons)))).scalars())  # fmt: skip
        studies = {sid: uid for sid, uid in studies.items() if uid in withholding}
        if not studies:
            return {}
    visible = (select(Instance.study_fk, Instance.series_fk, Series.modality)
               .join(Series, Series.id == Instance.series_fk)
               .where(Instance.study_fk.in_(sorted(studies)), scope.instance_filter()))  # fmt: skip
    out: dict[str, dict[str, Any]] = {uid: {"NumberOfStudyRelatedSeries": 0, "NumberOfStudyRelatedInstances": 0,
                                            "ModalitiesInStudy": []} for uid in studies.values()}  # fmt: skip
    series: dict[str, set[int]] = {uid: set() for uid in studies.values()}
    modalities: dict[str, set[str]] = {uid: set() for uid in studies.values()}
    for study_fk, series_fk, modality in conn.execute(visible):
        uid = studies[study_fk]
        out[uid]["NumberOfStudyRelatedInstances"] += 1
        series[uid].add(series_fk)
        if modality:
            modalities[uid].add(modality)
    for uid in out:
        out[uid]["NumberOfStudyRelatedSeries"] = len(series[uid])
        out[uid]["ModalitiesInStudy"] = sorted(modalities[uid])
    return out


def _visible_patient_counts(conn: Any, request: QueryRequest, rows: Sequence[Any]) -> dict[int, tuple[int, int, int]]:
    """Per-patient counts over the studies the caller may see (exact stored counts when all are)."""
    if request.scope.all_studies and not request.scope.hidden_study_uids:
        return {r[0].id: (r[0].study_count, r[0].series_count, r[0].instance_count) for r in rows}
    ids = [r[0].id for r in rows]
    if not ids:
        return {}
    stmt = (
        select(Study.patient_fk, func.count(Study.id), func.coalesce(func.sum(Study.series_count), 0),
               func.coalesce(func.sum(Study.instance_count), 0))
        .where(Study.patient_fk.in_(ids), request.scope.study_filter())
        .group_by(Study.patient_fk)
    )
    return {pid: (int(a), int(b), int(c)) for pid, a, b, c in conn.execute(stmt)}


def _match(
    level: Level, row: Any, requested: tuple[str, ...], patient_counts: dict[int, tuple[int, int, int]]
) -> Match:
    values: dict[str, Any] = {}
    extra: dict[str, Any] | None = None
    if level is Level.PATIENT:
        patient: Patient = row[0]
        counts = patient_counts.get(patient.id, (0, 0, 0))
        values.update(
            PatientName=patient.patient_name, PatientID=patient.patient_id, IssuerOfPatientID=patient.issuer,
            PatientBirthDate=patient.birth_date, PatientSex=patient.sex,
            NumberOfPatientRelatedStudies=counts[0], NumberOfPatientRelatedSeries=counts[1],
            NumberOfPatientRelatedInstances=counts[2],
        )
        return Match(level, values, requested)
    study: Study = row[-1]
    values.update(
        PatientName=study.patient_name, PatientID=study.patient_id, IssuerOfPatientID=study.issuer,
        PatientBirthDate=study.birth_date, PatientSex=study.sex,
        StudyInstanceUID=study.study_uid, StudyDate=study.study_date, StudyTime=study.study_time,
        AccessionNumber=study.accession_number, StudyID=study.study_id, StudyDescription=study.study_description,
        ReferringPhysicianName=study.referring_physician, InstitutionName=study.institution_name,
        ModalitiesInStudy=[m for m in study.modalities.split("\\") if m],
        NumberOfStudyRelatedSeries=study.series_count, NumberOfStudyRelatedInstances=study.instance_count,
    )
    if level.depth >= Level.SERIES.depth:
        series: Series = row[-2]
        values.update(
            SeriesInstanceUID=series.series_uid, Modality=series.modality, SeriesNumber=series.series_number,
            SeriesDescription=series.series_description, BodyPartExamined=series.body_part,
            SeriesDate=series.series_date, SeriesTime=series.series_time,
            PerformedProcedureStepStartDate=series.pps_start_date,
            PerformedProcedureStepStartTime=series.pps_start_time,
            NumberOfSeriesRelatedInstances=series.instance_count,
        )
    if level is Level.IMAGE:
        inst: Instance = row[0]
        values.update(
            SOPInstanceUID=inst.sop_uid, SOPClassUID=inst.sop_class_uid, InstanceNumber=inst.instance_number,
            Rows=inst.rows, Columns=inst.columns, NumberOfFrames=inst.number_of_frames,
        )
        extra = json.loads(inst.metadata_json)
    return Match(level, values, requested, extra)
