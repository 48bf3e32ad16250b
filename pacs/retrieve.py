"""The one retrieve path: locate stored instances and read them, whole or frame by frame.

C-MOVE, C-GET, WADO-RS/URI, the viewer and the AI runner read through here. Locating is one
index query per request (never one per instance); frames are one ranged read each, fetched
concurrently when several are asked for.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import Engine, bindparam, select

from pacs.access import AccessScope
from pacs.dicomfile import FrameRange, frame_bytes_from_range
from pacs.errors import InvalidQuery, NotFound
from pacs.index.models import Instance, Series, Study
from pacs.storage import ObjectStore

_READERS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="frame-reader")


@dataclass(frozen=True, slots=True)
class StoredInstance:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    object_key: str
    size_bytes: int
    sha256: str
    encapsulated: bool
    frames: tuple[FrameRange, ...]
    number_of_frames: int | None
    rows: int | None
    columns: int | None
    instance_number: int | None


_COLUMNS = (
    Study.study_uid,
    Series.series_uid,
    Instance.sop_uid,
    Instance.sop_class_uid,
    Instance.transfer_syntax_uid,
    Instance.object_key,
    Instance.size_bytes,
    Instance.sha256,
    Instance.encapsulated,
    Instance.frames_json,
    Instance.number_of_frames,
    Instance.rows,
    Instance.columns,
    Instance.instance_number,
)


def _stored(row: Any) -> StoredInstance:
    frames = tuple(FrameRange(o, n) for o, n in json.loads(row.frames_json or "[]"))
    return StoredInstance(
        row.study_uid, row.series_uid, row.sop_uid, row.sop_class_uid, row.transfer_syntax_uid,
        row.object_key, row.size_bytes, row.sha256, bool(row.encapsulated), frames,
        row.number_of_frames, row.rows, row.columns, row.instance_number,
    )


@functools.lru_cache(maxsize=256)
def _located(scope: AccessScope, by_study: bool = False, by_series: bool = False, by_sop: bool = False) -> Any:
    """The statement selecting a scope's visible instances, narrowed by the UIDs given as bound
    parameters (``study_uid``, ``series_uid``, ``sop_uid``). Built once per scope and shape: a
    retrieve's scope is one of few (an account's role and partition, a share's study), and building
    the statement was a fifth of a WADO-RS request's CPU time."""
    stmt = (
        select(*_COLUMNS)
        .join(Series, Series.id == Instance.series_fk)
        .join(Study, Study.id == Instance.study_fk)
        .where(scope.study_filter(), scope.instance_filter())
    )
    if by_study:
        stmt = stmt.where(Study.study_uid == bindparam("study_uid"))
    if by_series:
        stmt = stmt.where(Series.series_uid == bindparam("series_uid"))
    if by_sop:
        stmt = stmt.where(Instance.sop_uid == bindparam("sop_uid"))
    return stmt.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)


def find_instances(
    engine: Engine,
    scope: AccessScope,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[StoredInstance]:
    """Every visible instance under the given UIDs, in series then instance order; NotFound if none."""
    if study_uid is None and series_uid is None and sop_uid is None:
        raise InvalidQuery("a study, series or instance UID is required")
    with engine.connect() as conn:
        uids = {"study_uid": study_uid, "series_uid": series_uid, "sop_uid": sop_uid}
        stmt = _located(scope, study_uid is not None, series_uid is not None, sop_uid is not None)
        rows = conn.execute(stmt, {k: v for k, v in uids.items() if v is not None}).all()
    if not rows:
        what = "instance" if sop_uid else "series" if series_uid else "study"
        raise NotFound(f"no such {what}")
    return [_stored(r) for r in rows]


def find_instances_by_sop(engine: Engine, scope: AccessScope, sop_uids: Sequence[str]) -> list[StoredInstance]:
    """The visible instances among ``sop_uids`` (missing ones are simply absent)."""
    out: list[StoredInstance] = []
    with engine.connect() as conn:
        for start in range(0, len(sop_uids), 500):
            chunk = list(sop_uids[start : start + 500])
            stmt = _located(scope).where(Instance.sop_uid.in_(chunk))
            out.extend(_stored(r) for r in conn.execute(stmt))
    return out


def instance_metadata(
    engine: Engine,
    scope: AccessScope,
    *,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[str]:
    """The stored DICOM JSON of each visible instance (PS3.18 F.2), from the index alone."""
    stmt = (
        select(Instance.metadata_json)
        .join(Series, Series.id == Instance.series_fk)
        .join(Study, Study.id == Instance.study_fk)
        .where(scope.study_filter(), scope.instance_filter(), Study.study_uid == study_uid)
    )
    if series_uid is not None:
        stmt = stmt.where(Series.series_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_uid == sop_uid)
    stmt = stmt.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
    with engine.connect() as conn:
        rows = list(conn.execute(stmt).scalars())
    if not rows:
        raise NotFound("no such " + ("instance" if sop_uid else "series" if series_uid else "study"))
    return rows


def open_instance(store: ObjectStore, instance: StoredInstance) -> BinaryIO:
    """The stored Part 10 bytes, exactly as received."""
    return store.open(instance.object_key)


def read_frames(store: ObjectStore, instance: StoredInstance, numbers: Sequence[int]) -> list[bytes]:
    """Frames by 1-based number, each one ranged read (concurrent when several).

    Returns native pixel bytes or the frame's compressed codestream as stored. Raises NotFound
    for a frame number out of range and InvalidQuery when frames of this object cannot be
    addressed by range (deflated, bit-packed): the caller then decodes the whole object.
    """
    if not instance.frames:
        raise InvalidQuery("the frames of this instance cannot be read by range")
    for n in numbers:
        if not 1 <= n <= len(instance.frames):
            raise NotFound(f"frame {n} does not exist (the instance has {len(instance.frames)})")

    def one(n: int) -> bytes:
        rng = instance.frames[n - 1]
        return frame_bytes_from_range(store.get_range(instance.object_key, rng.offset, rng.length),
                                      instance.encapsulated)

    if len(numbers) == 1:
        return [one(numbers[0])]
    return list(_READERS.map(one, numbers))
