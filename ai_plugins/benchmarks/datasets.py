"""Benchmarks and their dataset versions: create, add studies, import labels, split.

Every change writes a new immutable version holding all its cases, identified by the SHA-256 of
its case list (study, split and label, sorted by study); a change that alters nothing makes no new
version. Each service function owns its transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, insert, select, update
from sqlalchemy.engine import Connection

from ai_plugins.benchmarks.errors import InvalidBenchmarkData
from ai_plugins.benchmarks.labels import TASK_METRICS, LabelSchema, Task, parse_labels, stratum_of
from ai_plugins.benchmarks.models import BenchmarkCaseRow, BenchmarkCopyRow, BenchmarkRow, BenchmarkVersionRow
from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.errors import Conflict, InvalidQuery, NotFound
from pacs.index.db import utcnow
from pacs.index.models import Instance, Series, Study
from pacs.jobs import aware, write_transaction
from pacs.query import Level, QueryRequest, run_query

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
MAX_CASES = 100_000
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class VersionInfo:
    id: int
    benchmark_id: int
    number: int
    digest: str
    change: str
    n_cases: int
    n_labelled: int
    n_dev: int
    n_test: int
    split_seed: int | None
    test_fraction: float | None
    created_by: str
    created_at: datetime

    @property
    def is_split(self) -> bool:
        return self.n_test > 0


@dataclass(frozen=True, slots=True)
class BenchmarkInfo:
    id: int
    name: str
    task: Task
    description: str
    schema: LabelSchema
    metrics: tuple[str, ...]
    created_by: str
    created_at: datetime
    current: VersionInfo | None
    partition: int = DEFAULT_PARTITION  # the hospital whose studies are its cases

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


@dataclass(frozen=True, slots=True)
class CaseInfo:
    id: int
    study_uid: str
    label: dict[str, Any] | None
    split: str
    stratum: str
    sex: str
    age_band: str
    manufacturer: str


@dataclass(frozen=True, slots=True)
class _Draft:
    study_uid: str
    label_json: str | None
    split: str
    stratum: str
    sex: str
    age_band: str
    manufacturer: str


@dataclass(frozen=True, slots=True)
class AddResult:
    version: VersionInfo
    added: int
    already: int


# --- reading -------------------------------------------------------------------------------------


def _version(row: Any) -> VersionInfo:
    return VersionInfo(row.id, row.benchmark_fk, row.number, row.digest, row.change, row.n_cases, row.n_labelled,
                       row.n_dev, row.n_test, row.split_seed, row.test_fraction, row.created_by,
                       aware(row.created_at))  # fmt: skip


def _current(conn: Connection, benchmark_id: int) -> VersionInfo | None:
    row = conn.execute(select(BenchmarkVersionRow).where(BenchmarkVersionRow.benchmark_fk == benchmark_id)
                       .order_by(BenchmarkVersionRow.number.desc()).limit(1)).first()  # fmt: skip
    return None if row is None else _version(row)


def _benchmark(conn: Connection, row: Any) -> BenchmarkInfo:
    return BenchmarkInfo(row.id, row.name, Task(row.task), row.description,
                         LabelSchema.model_validate_json(row.label_schema_json or "{}"),
                         tuple(json.loads(row.metrics_json or "[]")) or TASK_METRICS[Task(row.task)], row.created_by,
                         aware(row.created_at), _current(conn, row.id), row.partition_fk)  # fmt: skip


def list_benchmarks(engine: Engine, partition: int = DEFAULT_PARTITION) -> list[BenchmarkInfo]:
    """The benchmarks of ``partition``."""
    with engine.connect() as conn:
        return [_benchmark(conn, r) for r in conn.execute(select(BenchmarkRow).where(
            BenchmarkRow.partition_fk == partition).order_by(BenchmarkRow.id))]  # fmt: skip


def get_benchmark(engine: Engine, ref: int | str, partition: int | None = None) -> BenchmarkInfo:
    """A benchmark by id or by name (of ``partition``, when given: another's does not exist for it). A
    name without a partition (the site's deployment gate) is the default partition's first, as names
    are unique per partition only."""
    cond = BenchmarkRow.id == int(ref) if str(ref).isdigit() else BenchmarkRow.name == str(ref)
    if partition is not None:
        cond = and_(cond, BenchmarkRow.partition_fk == partition)
    with engine.connect() as conn:
        row = conn.execute(select(BenchmarkRow).where(cond).order_by(BenchmarkRow.partition_fk != DEFAULT_PARTITION,
                                                                     BenchmarkRow.id)).first()  # fmt: skip
        if row is None:
            raise NotFound(f"no benchmark {ref}")
        return _benchmark(conn, row)


def list_versions(engine: Engine, benchmark_id: int) -> list[VersionInfo]:
    with engine.connect() as conn:
        rows = conn.execute(select(BenchmarkVersionRow).where(BenchmarkVersionRow.benchmark_fk == benchmark_id)
                            .order_by(BenchmarkVersionRow.number))  # fmt: skip
        return [_version(r) for r in rows]


def get_version(engine: Engine, benchmark_id: int, number: int | None = None) -> VersionInfo:
    """Version ``number`` of the benchmark, or its newest."""
    with engine.connect() as conn:
        if number is None:
            found = _current(conn, benchmark_id)
        else:
            row = conn.execute(select(BenchmarkVersionRow).where(BenchmarkVersionRow.benchmark_fk == benchmark_id,
                                                                 BenchmarkVersionRow.number == number)).first()
            found = None if row is None else _version(row)
    if found is None:
        raise NotFound("the benchmark has no studies yet" if number is None else f"no version {number}")
    return found


def version_by_id(engine: Engine, version_id: int) -> VersionInfo:
    with engine.connect() as conn:
        row = conn.execute(select(BenchmarkVersionRow).where(BenchmarkVersionRow.id == version_id)).first()
    if row is None:
        raise NotFound("no such dataset version")
    return _version(row)


def _case(row: Any) -> CaseInfo:
    return CaseInfo(row.id, row.study_uid, None if row.label_json is None else json.loads(row.label_json), row.split,
                    row.stratum, row.sex, row.age_band, row.manufacturer)  # fmt: skip


def list_cases(engine: Engine, version_id: int, *, split: str | None = None) -> list[CaseInfo]:
    stmt = select(BenchmarkCaseRow).where(BenchmarkCaseRow.version_fk == version_id)
    if split is not None:
        stmt = stmt.where(BenchmarkCaseRow.split == split)
    with engine.connect() as conn:
        return [_case(r) for r in conn.execute(stmt.order_by(BenchmarkCaseRow.study_uid))]


# --- writing -------------------------------------------------------------------------------------


def create_benchmark(engine: Engine, *, name: str, task: str, description: str = "",
                     schema: LabelSchema | None = None, metrics: Sequence[str] = (),
                     created_by: str, partition: int = DEFAULT_PARTITION) -> BenchmarkInfo:  # fmt: skip
    """A new benchmark of ``partition`` without studies (its first version comes with the first studies).
    Names are unique per partition: another partition may have a benchmark of the same name."""
    if not NAME.match(name) or name.strip() != name or name.isdigit() or name.lower() == "evaluations":
        raise InvalidBenchmarkData("a benchmark name is 1 to 64 letters, digits, spaces, '.', '_' or '-', "
                                   "not only digits and not 'evaluations'")  # fmt: skip
    try:
        kind = Task(task)
    except ValueError:
        raise InvalidBenchmarkData(f"task must be one of {', '.join(t.value for t in Task)}") from None
    chosen = tuple(metrics) or TASK_METRICS[kind]
    unknown = [m for m in chosen if m not in TASK_METRICS[kind]]
    if unknown:
        raise InvalidBenchmarkData(f"{kind.value} benchmarks report {', '.join(TASK_METRICS[kind])}; "
                                   f"not {', '.join(unknown)}")  # fmt: skip
    now = utcnow()
    with write_transaction(engine) as conn:
        if conn.execute(select(BenchmarkRow.id).where(BenchmarkRow.name == name,
                                                      BenchmarkRow.partition_fk == partition)).first() is not None:
            raise Conflict(f"a benchmark named {name!r} exists")
        conn.execute(insert(BenchmarkRow).values(
            name=name, task=kind.value, description=description[:4000],
            label_schema_json=(schema or LabelSchema()).model_dump_json(), metrics_json=json.dumps(list(chosen)),
            created_by=created_by[:64], created_at=now, updated_at=now, partition_fk=partition))  # fmt: skip
    return get_benchmark(engine, name, partition)


def _digest(task: Task, drafts: Iterable[_Draft]) -> str:
    h = hashlib.sha256(f"cloudfilm-benchmark-dataset/1 task={task.value}\n".encode())
    for d in sorted(drafts, key=lambda d: d.study_uid):
        h.update(f"{d.study_uid}\t{d.split}\t{d.label_json or ''}\n".encode())
    return h.hexdigest()


def _drafts(conn: Connection, version_id: int) -> list[_Draft]:
    rows = conn.execute(select(BenchmarkCaseRow).where(BenchmarkCaseRow.version_fk == version_id))
    return [_Draft(r.study_uid, r.label_json, r.split, r.stratum, r.sex, r.age_band, r.manufacturer) for r in rows]


def _write_version(conn: Connection, bench: BenchmarkInfo, drafts: list[_Draft], change: str, created_by: str, *,
                   seed: int | None = None, fraction: float | None = None) -> VersionInfo:  # fmt: skip
    """Store ``drafts`` as the next version, unless they equal the current one (then: the current one)."""
    digest = _digest(bench.task, drafts)
    current = _current(conn, bench.id)
    if current is not None and current.digest == digest:
        return current
    number = 1 if current is None else current.number + 1
    now = utcnow()
    version_id = conn.execute(insert(BenchmarkVersionRow).values(
        benchmark_fk=bench.id, number=number, digest=digest, change=change[:256],
        split_seed=seed if seed is not None else (current.split_seed if current else None),
        test_fraction=fraction if fraction is not None else (current.test_fraction if current else None),
        n_cases=len(drafts), n_labelled=sum(d.label_json is not None for d in drafts),
        n_dev=sum(d.split == "dev" for d in drafts), n_test=sum(d.split == "test" for d in drafts),
        created_by=created_by[:64], created_at=now).returning(BenchmarkVersionRow.id)).scalar_one()  # fmt: skip
    for start in range(0, len(drafts), 500):
        conn.execute(insert(BenchmarkCaseRow), [
            {"version_fk": version_id, "study_uid": d.study_uid, "label_json": d.label_json, "split": d.split,
             "stratum": d.stratum, "sex": d.sex, "age_band": d.age_band, "manufacturer": d.manufacturer}
            for d in drafts[start:start + 500]])  # fmt: skip
    conn.execute(update(BenchmarkRow).where(BenchmarkRow.id == bench.id).values(updated_at=now))
    row = conn.execute(select(BenchmarkVersionRow).where(BenchmarkVersionRow.id == version_id)).one()
    return _version(row)


def age_band(birth_date: str, on: str) -> str:
    """Age at the study in bands (0-17, 18-39, 40-59, 60-79, 80+); empty when a date is unknown."""
    try:
        born = dt.date(int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:8]))
        day = dt.date(int(on[:4]), int(on[4:6]), int(on[6:8]))
    except (ValueError, IndexError):
        return ""
    years = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    for top, band in ((17, "0-17"), (39, "18-39"), (59, "40-59"), (79, "60-79")):
        if years <= top:
            return band
    return "80+"


def _attributes(conn: Connection, uids: Sequence[str], partition: int) -> dict[str, tuple[str, str, str]]:
    """(sex, age band, manufacturer) of each existing study of ``partition`` among ``uids``."""
    out: dict[str, tuple[str, str, str]] = {}
    first = select(func.min(Instance.id)).where(Instance.study_fk == Study.id).correlate(Study).scalar_subquery()
    for start in range(0, len(uids), 500):
        chunk = list(uids[start:start + 500])
        rows = conn.execute(select(Study.study_uid, Study.sex, Study.birth_date, Study.study_date,
                                   Instance.metadata_json).outerjoin(Instance, Instance.id == first)
                            .where(Study.study_uid.in_(chunk), Study.partition_fk == partition))  # fmt: skip
        for uid, sex, birth, date, meta in rows:
            maker = ""
            if meta:
                value = json.loads(meta).get("00080070", {}).get("Value") or [""]
                maker = str(value[0])[:64]
            out[uid] = ((sex or "")[:16], age_band(birth or "", date or ""), maker)
    return out


def add_studies(engine: Engine, benchmark_id: int, *, study_uids: Sequence[str] = (),
                query: Mapping[str, str] | None = None, created_by: str) -> AddResult:  # fmt: skip
    """Add studies of the benchmark's partition by UID list and/or by a QIDO-style query; unknown UIDs
    (another partition's included) refuse the whole request."""
    bench = get_benchmark(engine, benchmark_id)
    wanted = list(dict.fromkeys(u.strip() for u in study_uids if u.strip()))
    if query:
        try:
            found = run_query(engine, QueryRequest(Level.STUDY, dict(query),
                                                   scope=AccessScope.everything(bench.partition),
                                                   limit=MAX_CASES))  # fmt: skip
            wanted.extend(str(m.get("StudyInstanceUID")) for m in found)
        except InvalidQuery as exc:
            raise InvalidBenchmarkData(f"the query is not valid: {exc}") from None
        wanted = list(dict.fromkeys(wanted))
    if not wanted:
        raise InvalidBenchmarkData("no studies to add: give study UIDs or a query that matches studies")
    with write_transaction(engine) as conn:
        copies = set(conn.execute(select(BenchmarkCopyRow.copy_study_uid)
                                  .where(BenchmarkCopyRow.copy_study_uid.in_(wanted[:MAX_CASES]))).scalars())
        wanted = [u for u in wanted if u not in copies]  # de-identified copies are never cases
        attributes = _attributes(conn, wanted, bench.partition)
        unknown = [u for u in wanted if u not in attributes]
        if unknown:
            raise InvalidBenchmarkData("the studies were not added; these are not in the archive",
                                       [f"study {u}" for u in unknown])  # fmt: skip
        current = _current(conn, bench.id)
        drafts = _drafts(conn, current.id) if current else []
        have = {d.study_uid for d in drafts}
        new = [u for u in wanted if u not in have]
        if len(drafts) + len(new) > MAX_CASES:
            raise InvalidBenchmarkData(f"a benchmark holds at most {MAX_CASES} studies")
        drafts += [_Draft(u, None, "", "", *attributes[u]) for u in new]
        version = _write_version(conn, bench, drafts, f"added {len(new)} studies", created_by)
    return AddResult(version, len(new), len(wanted) - len(new))


def import_labels(engine: Engine, benchmark_id: int, content: str, *, fmt: str, created_by: str) -> VersionInfo:
    """Set the labels in ``content`` (CSV or JSON) on the current version's cases: all or none."""
    bench = get_benchmark(engine, benchmark_id)
    if bench.current is None:
        raise InvalidBenchmarkData("add studies before labels")
    with engine.connect() as conn:
        drafts = _drafts(conn, bench.current.id)
    by_uid = {d.study_uid: d for d in drafts}
    labels = parse_labels(bench.task, bench.schema, content, fmt=fmt, known=set(by_uid),
                          spacing_of=lambda study, series: series_spacing(engine, study, series,
                                                                          bench.partition))  # fmt: skip
    changed = []
    for draft in drafts:
        label = labels.get(draft.study_uid)
        if label is None:
            changed.append(draft)
            continue
        stratum = stratum_of(bench.task, bench.schema, label)
        if draft.split and draft.stratum != stratum:
            raise InvalidBenchmarkData(f"study {draft.study_uid} is already in the {draft.split} split as "
                                       f"{draft.stratum!r}; a split case's class cannot change")  # fmt: skip
        changed.append(replace(draft, label_json=json.dumps(label, sort_keys=True, separators=(",", ":")),
                               stratum=stratum))  # fmt: skip
    with write_transaction(engine) as conn:
        return _write_version(conn, bench, changed, f"labels for {len(labels)} studies", created_by)


def test_studies(conn: Connection) -> set[str]:
    """Every study that is a test case in any version of any benchmark (hidden for good)."""
    return set(conn.execute(select(BenchmarkCaseRow.study_uid).where(BenchmarkCaseRow.split == "test")
                            .distinct()).scalars())  # fmt: skip


def disclosed_studies(conn: Connection) -> set[str]:
    """Every study whose de-identified dev copy has been published to vendors."""
    return set(conn.execute(select(BenchmarkCopyRow.source_study_uid).where(BenchmarkCopyRow.purpose == "dev")
                            .distinct()).scalars())  # fmt: skip


def assign_split(engine: Engine, benchmark_id: int, *, seed: int, test_fraction: float,
                 created_by: str) -> VersionInfo:  # fmt: skip
    """A new version whose cases are split into dev and test (see :mod:`ai_plugins.benchmarks.splits`)."""
    from ai_plugins.benchmarks.splits import assign_splits

    bench = get_benchmark(engine, benchmark_id)
    if bench.current is None:
        raise InvalidBenchmarkData("add studies and labels before splitting")
    if not 0.0 < test_fraction < 1.0:
        raise InvalidBenchmarkData("test_fraction must be between 0 and 1")
    with write_transaction(engine) as conn:
        drafts = _drafts(conn, bench.current.id)
        unlabelled = [d.study_uid for d in drafts if d.label_json is None]
        if unlabelled:
            raise InvalidBenchmarkData("every study needs a label before the split; unlabelled",
                                       [f"study {u}" for u in sorted(unlabelled)])  # fmt: skip
        uids = {d.study_uid for d in drafts}
        splits = assign_splits({d.study_uid: d.stratum for d in drafts}, seed=seed, test_fraction=test_fraction,
                               must_test=test_studies(conn) & uids, must_dev=disclosed_studies(conn) & uids)
        if not any(s == "test" for s in splits.values()) or not any(s == "dev" for s in splits.values()):
            raise InvalidBenchmarkData("the split leaves dev or test empty; add studies or change test_fraction")
        changed = [replace(d, split=splits[d.study_uid]) for d in drafts]
        return _write_version(conn, bench, changed, f"split (seed {seed}, test fraction {test_fraction:g})",
                              created_by, seed=seed, fraction=test_fraction)  # fmt: skip


def series_spacing(engine: Engine, study_uid: str, series_uid: str,
                   partition: int = DEFAULT_PARTITION) -> tuple[float, float, float] | None:  # fmt: skip
    """(slice, row, column) spacing in mm of a single-frame series of ``partition``, from the index's stored
    headers."""
    stmt = (select(Instance.metadata_json).join(Series, Series.id == Instance.series_fk)
            .join(Study, Study.id == Instance.study_fk)
            .where(Study.study_uid == study_uid, Series.series_uid == series_uid,
                   Study.partition_fk == partition))  # fmt: skip
    with engine.connect() as conn:
        metas = [json.loads(m) for m in conn.execute(stmt).scalars()]
    try:
        pixel = [float(v) for v in metas[0]["00280030"]["Value"]]
        orient = [float(v) for v in metas[0]["00200037"]["Value"]]
        positions = sorted(
            sum(p * n for p, n in zip((float(v) for v in m["00200032"]["Value"]), _normal(orient), strict=True))
            for m in metas
        )
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    gaps = [b - a for a, b in zip(positions, positions[1:], strict=False) if b - a > 1e-6]
    if not gaps:
        return None
    gaps.sort()
    return (round(gaps[len(gaps) // 2], 6), pixel[0], pixel[1])


def _normal(orient: Sequence[float]) -> tuple[float, float, float]:
    r, c = orient[:3], orient[3:6]
    return (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
