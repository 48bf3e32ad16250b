"""Reading a study's report versions, as each caller may: staff every version and the draft,
patients and share visitors only the latest signed version (never a draft, never a superseded one).

The study must be visible in the caller's scope; outside it a report does not exist (NotFound), as
everywhere else. Reports belong to their study's partition (:mod:`pacs.partitions`): every lookup
names it (the scope's), so the report of a twin study with the same UID in another partition is never
read, listed or amended.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import pydicom
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import Connection

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import NotFound
from pacs.index.models import Study
from pacs.reports.models import ReportRow
from pacs.reports.pdf import pdf_bytes
from pacs.reports.templates import ReportTemplate, study_modality, template_for
from pacs.reports.types import ReportView, view_of
from pacs.retrieve import find_instances, open_instance

NO_REPORT = "there is no such report for this study"


def require_study(conn: Connection, scope: AccessScope, study_uid: str) -> Study:
    """The study's index row (NotFound when it is not in ``scope``)."""
    row = conn.execute(select(Study).where(Study.study_uid == study_uid, scope.study_filter())).first()
    if row is None:
        raise NotFound("no such study")
    return Study(**row._mapping)


def views(conn: Connection, rows: Sequence[ReportRow]) -> list[ReportView]:
    """Views of ``rows``, each signed version naming the version that superseded it."""
    ids = [r.id for r in rows]
    successors: dict[int, int] = {}
    if ids:
        found = conn.execute(select(ReportRow.supersedes_id, ReportRow.id).where(
            ReportRow.supersedes_id.in_(ids), ReportRow.status != "draft"))  # fmt: skip
        successors = {int(old): int(new) for old, new in found if old is not None}
    return [view_of(r, template_for(r.modality).title, successors.get(r.id)) for r in rows]


def rows_of(conn: Connection, partition: int, study_uid: str) -> list[ReportRow]:
    """Every version and draft of ``partition``'s study's report, newest first (drafts before signed versions)."""
    found = conn.execute(select(ReportRow).where(ReportRow.partition_fk == partition, ReportRow.study_uid == study_uid)
                         .order_by(ReportRow.version.is_(None).desc(), ReportRow.version.desc(), ReportRow.id.desc()))
    return [ReportRow(**r._mapping) for r in found]


def list_versions(engine: Engine, scope: AccessScope, study_uid: str, *, latest_signed_only: bool) -> list[ReportView]:
    """The study's report versions the caller may read, newest first."""
    with engine.connect() as conn:
        require_study(conn, scope, study_uid)
        rows = rows_of(conn, scope.partition, study_uid)
        if latest_signed_only:
            rows = [r for r in rows if r.status == "signed"][:1]
        return views(conn, rows)


def get_version(engine: Engine, scope: AccessScope, study_uid: str, report_id: int, *,
                latest_signed_only: bool) -> ReportView:  # fmt: skip
    for view in list_versions(engine, scope, study_uid, latest_signed_only=latest_signed_only):
        if view.id == report_id:
            return view
    raise NotFound(NO_REPORT)


def latest_signed(engine: Engine, scope: AccessScope, study_uid: str) -> ReportView | None:
    """The study's current signed report, or ``None`` (nothing signed yet)."""
    found = list_versions(engine, scope, study_uid, latest_signed_only=True)
    return found[0] if found else None


def study_template(engine: Engine, scope: AccessScope, study_uid: str) -> ReportTemplate:
    """The template a new report of the study starts from (by the study's imaging modality)."""
    with engine.connect() as conn:
        study = require_study(conn, scope, study_uid)
    return template_for(study_modality(study.modalities.split("\\")))


def signed_studies(engine: Engine, study_uids: Sequence[str], partition: int) -> set[str]:
    """Those of ``partition``'s ``study_uids`` that have a signed report (the worklist's "reported")."""
    uids = sorted(set(study_uids))
    if not uids:
        return set()
    with engine.connect() as conn:
        return set(conn.execute(select(ReportRow.study_uid).where(
            ReportRow.partition_fk == partition, ReportRow.study_uid.in_(uids), ReportRow.status == "signed")
            .distinct()).scalars())  # fmt: skip


def latest_version_number(conn: Connection, partition: int, study_uid: str) -> int:
    return int(conn.execute(select(func.coalesce(func.max(ReportRow.version), 0))
                            .where(ReportRow.partition_fk == partition, ReportRow.study_uid == study_uid))
               .scalar_one() or 0)  # fmt: skip


def report_pdf(archive: Archive, scope: AccessScope, study_uid: str, report_id: int, *,
               latest_signed_only: bool) -> tuple[ReportView, bytes]:  # fmt: skip
    """A signed version and its PDF, read from the Encapsulated PDF stored in the study."""
    view = get_version(archive.engine, scope, study_uid, report_id, latest_signed_only=latest_signed_only)
    if not view.pdf_uid:
        raise NotFound("this version of the report has no PDF: it is not signed")
    [stored] = find_instances(archive.engine, scope, study_uid=study_uid, sop_uid=view.pdf_uid)
    with open_instance(archive.store, stored) as fh:
        return view, pdf_bytes(pydicom.dcmread(io.BytesIO(fh.read())))
