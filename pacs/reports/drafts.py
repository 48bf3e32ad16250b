"""Report drafts: a physician writes, saves (durably, in the index) and comes back to them.

A study has at most one draft at a time. A draft made while a signed version exists is an
amendment: signing it supersedes that version (:mod:`pacs.reports.signing`). Key images must be
instances of the study; AI findings may be cited only when a physician accepted them (the caller
hands the citable ones over: they live above this layer, in ``ai_plugins.review``). Every save is
audited. A report is written in the partition of the account writing it (:mod:`pacs.partitions`):
its study, key images and earlier versions are looked up there only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import insert, select, update

from pacs.access import AccessScope
from pacs.accounts.audit import Action, AuditEvent, record
from pacs.accounts.principal import Principal
from pacs.archive import Archive
from pacs.errors import Conflict, InvalidQuery, NotFound
from pacs.index.db import utcnow
from pacs.jobs import write_transaction
from pacs.reports.models import ReportRow
from pacs.reports.reading import NO_REPORT, require_study, rows_of, views
from pacs.reports.templates import study_modality
from pacs.reports.types import CitedFinding, DraftRequest, KeyImage, ReportSections, ReportView
from pacs.retrieve import find_instances_by_sop


def _key_images(archive: Archive, partition: int, study_uid: str, wanted: Sequence[KeyImage]) -> list[KeyImage]:
    """The cited images as the index knows them (InvalidQuery: one is not in this study)."""
    uids = list(dict.fromkeys(k.sop_uid for k in wanted))
    found = {i.sop_uid: i for i in find_instances_by_sop(archive.engine, AccessScope.everything(partition), uids)
             if i.study_uid == study_uid}  # fmt: skip
    missing = [u for u in uids if u not in found]
    if missing:
        raise InvalidQuery(f"key image {missing[0]} is not an instance of this study")
    return [KeyImage(series_uid=found[u].series_uid, sop_uid=u, sop_class_uid=found[u].sop_class_uid) for u in uids]


def _cited(wanted: Sequence[str], citable: Sequence[CitedFinding]) -> list[CitedFinding]:
    by_uid = {c.document_uid: c for c in citable}
    for uid in wanted:
        if uid not in by_uid:
            raise InvalidQuery("only AI findings a physician accepted may be cited, and this one is not")
    return [by_uid[u] for u in dict.fromkeys(wanted)]


def _values(archive: Archive, partition: int, study_uid: str, request: DraftRequest,
            citable: Sequence[CitedFinding], modality: str) -> dict[str, object]:  # fmt: skip
    return {
        "modality": modality,
        "sections_json": request.sections.model_dump_json(),
        "key_images_json": json.dumps([k.model_dump() for k in _key_images(archive, partition, study_uid,
                                                                          request.key_images)]),
        "ai_findings_json": json.dumps([c.model_dump() for c in _cited(request.ai_findings, citable)]),
        "updated_at": utcnow(),
    }


def _audit(archive: Archive, principal: Principal | None, study_uid: str, detail: str, source: str,
           username: str = "") -> None:  # fmt: skip
    event = AuditEvent.by(principal, Action.REPORT_DRAFT, study_uid=study_uid, detail=detail[:500], source=source)
    if username and not event.username:
        event = AuditEvent.by(None, Action.REPORT_DRAFT, study_uid=study_uid, detail=detail[:500], source=source,
                              username=username)  # fmt: skip
    record(archive.engine, event)


def insert_draft(archive: Archive, partition: int, study_uid: str, request: DraftRequest,
                 citable: Sequence[CitedFinding], *, author: str, source: str = "viewer",
                 beside_draft: bool = False) -> int:  # fmt: skip
    """A new draft of ``partition``'s study's report (Conflict: it already has one, unless ``beside_draft``:
    a report signed at once, that leaves a physician's draft alone); its id."""
    with write_transaction(archive.engine) as conn:
        study = require_study(conn, AccessScope.everything(partition), study_uid)
        current = rows_of(conn, partition, study_uid)
        draft = next((r for r in current if r.status == "draft"), None)
        if draft is not None and not beside_draft:
            raise Conflict(f"this study's report already has a draft (report {draft.id}); save into that one")
        modality = request.modality.upper() or study_modality(study.modalities.split("\\"))
        signed = next((r for r in current if r.status == "signed"), None)
        now = utcnow()
        values = _values(archive, partition, study_uid, request, citable, modality) | {
            "partition_fk": partition, "study_uid": study_uid, "status": "draft", "author": author[:64],
            "source": source, "created_at": now,
            "supersedes_id": signed.id if signed is not None else None,
        }  # fmt: skip
        key = conn.execute(insert(ReportRow).values(**values)).inserted_primary_key
        assert key is not None
        return int(key[0])


def create_draft(archive: Archive, principal: Principal, study_uid: str, request: DraftRequest, *,
                 citable: Sequence[CitedFinding], source: str = "") -> ReportView:  # fmt: skip
    """Start the study's report (or, when a version is signed, an amendment of it) with ``request``."""
    partition = principal.home_partition
    report_id = insert_draft(archive, partition, study_uid, request, citable, author=principal.username)
    view = draft_view(archive, partition, study_uid, report_id)
    what = f"amendment of report {view.supersedes_id}" if view.supersedes_id else "report"
    _audit(archive, principal, study_uid, f"draft {report_id} of the {what} created", source)
    return view


def update_draft(archive: Archive, principal: Principal, study_uid: str, report_id: int, request: DraftRequest, *,
                 citable: Sequence[CitedFinding], source: str = "") -> ReportView:  # fmt: skip
    """Save ``request`` into the draft ``report_id`` (Conflict: it is signed already)."""
    partition = principal.home_partition
    with write_transaction(archive.engine) as conn:
        require_study(conn, AccessScope.everything(partition), study_uid)
        row = conn.execute(select(ReportRow.status, ReportRow.modality).where(
            ReportRow.id == report_id, ReportRow.partition_fk == partition,
            ReportRow.study_uid == study_uid)).first()  # fmt: skip
        if row is None:
            raise NotFound(NO_REPORT)
        if row.status != "draft":
            raise Conflict("this version of the report is signed and cannot change; amend it instead")
        modality = request.modality.upper() or row.modality
        conn.execute(update(ReportRow).where(ReportRow.id == report_id)
                     .values(**_values(archive, partition, study_uid, request, citable, modality)))  # fmt: skip
    view = draft_view(archive, partition, study_uid, report_id)
    _audit(archive, principal, study_uid, f"draft {report_id} saved: {_summary(view)}", source)
    return view


def start_amendment(archive: Archive, principal: Principal, study_uid: str, report_id: int, *,
                    source: str = "") -> ReportView:  # fmt: skip
    """A draft amending signed version ``report_id``, starting from its text and citations."""
    partition = principal.home_partition
    with archive.engine.connect() as conn:
        require_study(conn, AccessScope.everything(partition), study_uid)
        signed = next((r for r in rows_of(conn, partition, study_uid) if r.id == report_id), None)
    if signed is None:
        raise NotFound(NO_REPORT)
    if signed.status != "signed":
        raise Conflict("only the current signed version of a report can be amended")
    request = DraftRequest(sections=ReportSections.model_validate_json(signed.sections_json), modality=signed.modality,
                           key_images=[KeyImage(**k) for k in json.loads(signed.key_images_json)],
                           ai_findings=[c["document_uid"] for c in json.loads(signed.ai_findings_json)])  # fmt: skip
    citable = [CitedFinding(**c) for c in json.loads(signed.ai_findings_json)]
    new_id = insert_draft(archive, partition, study_uid, request, citable, author=principal.username)
    view = draft_view(archive, partition, study_uid, new_id)
    _audit(archive, principal, study_uid, f"draft {new_id} amending version {signed.version} "
           f"(report {report_id}) started", source)  # fmt: skip
    return view


def draft_view(archive: Archive, partition: int, study_uid: str, report_id: int) -> ReportView:
    with archive.engine.connect() as conn:
        rows = [r for r in rows_of(conn, partition, study_uid) if r.id == report_id]
        if not rows:
            raise NotFound(NO_REPORT)
        return views(conn, rows)[0]


def _summary(view: ReportView) -> str:
    sections = ", ".join(f"{name} {len(text)} chars" for name, text in view.sections.model_dump().items() if text)
    return f"{sections or 'empty'}; {len(view.key_images)} key images; {len(view.ai_findings)} AI findings cited"
