"""Signing a report: its documents into the study through the one ingest path, then the signed state.

:func:`sign_draft` turns a physician's draft into the next version. The SR, the Encapsulated PDF
and (when images are cited) the Key Object Selection are built and stored first
(:mod:`pacs.ingest`); only then, in one transaction, the draft becomes signed, the version it
amends (the current signed one, if any) becomes superseded and the ``report.signed`` change-feed
event is written, so the feed announces exactly the signatures that committed. A failure before
that commit leaves the draft a draft (documents already stored are then stray copies no version
names, listed to staff only as the study's other instances). :func:`sign_external_report` stores a
report already signed elsewhere (a RIS), its author the verifying observer. Everything happens in
the study's partition (:mod:`pacs.partitions`): the documents are stored into it, the cited objects,
earlier versions and the ``report.signed`` event are its own.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.accounts.audit import Action, AuditEvent, record
from pacs.accounts.principal import Principal
from pacs.accounts.users import active_user
from pacs.archive import Archive
from pacs.errors import Conflict, InvalidQuery, NotFound, StorageUnavailable
from pacs.events import EVENT_REPORT_SIGNED, record_event
from pacs.index.db import utcnow
from pacs.index.models import Instance, Series
from pacs.jobs import write_transaction
from pacs.rejection import withhold_superseded
from pacs.reports.documents import SignedContent, build_kos, build_sr, series_uid
from pacs.reports.drafts import draft_view, insert_draft
from pacs.reports.models import ReportRow
from pacs.reports.pdf import encapsulate, render_pdf
from pacs.reports.reading import NO_REPORT, latest_version_number, require_study, rows_of
from pacs.reports.templates import template_for
from pacs.reports.types import DraftRequest, ReportSections, ReportView
from pacs.retrieve import StoredInstance, find_instances, find_instances_by_sop, open_instance


def _header(archive: Archive, stored: StoredInstance) -> Dataset:
    with open_instance(archive.store, stored) as fh:
        return pydicom.dcmread(io.BytesIO(fh.read()), stop_before_pixels=True)


def _headers(archive: Archive, partition: int, sop_uids: Sequence[str]) -> dict[str, Dataset]:
    found = find_instances_by_sop(archive.engine, AccessScope.everything(partition), list(sop_uids))
    return {s.sop_uid: _header(archive, s) for s in found}


def _study_header(archive: Archive, partition: int, study_uid: str) -> Dataset:
    """An instance of the study that is not a report document: its patient and study attributes."""
    ours = {series_uid(study_uid, kind) for kind in ("sr", "pdf", "kos")}
    instances = find_instances(archive.engine, AccessScope.everything(partition), study_uid=study_uid)
    return _header(archive, next((i for i in instances if i.series_uid not in ours), instances[0]))


def _store(archive: Archive, partition: int, ds: Dataset, label: str) -> None:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    target = archive.partitions.by_id(partition)
    if target is None:
        raise NotFound("the study's partition is no longer configured")
    result = archive.ingest.store_bytes(buffer.getvalue(), label=label, partition=target)
    if not result.ok:
        raise StorageUnavailable(f"the signed report could not be stored: {result.reason}")


def signer_name_of(archive: Archive, principal: Principal) -> str:
    """The name a signature carries: the account's full name, else its username."""
    user = active_user(archive.engine, principal.user_id) if principal.user_id is not None else None
    return (user.full_name if user and user.full_name else "") or principal.username


def _sign(archive: Archive, partition: int, study_uid: str, report_id: int, *, signer_name: str, signed_by: str,
          signed_at: datetime) -> tuple[ReportView, int | None]:  # fmt: skip
    """Store the documents of draft ``report_id`` and commit its signature; the view and the superseded id."""
    with archive.engine.connect() as conn:
        require_study(conn, AccessScope.everything(partition), study_uid)
        rows = rows_of(conn, partition, study_uid)
        previous_version = latest_version_number(conn, partition, study_uid)
    draft = next((r for r in rows if r.id == report_id), None)
    if draft is None:
        raise NotFound(NO_REPORT)
    if draft.status != "draft":
        raise Conflict("this version of the report is already signed")
    view = draft_view(archive, partition, study_uid, report_id)
    if view.sections.is_empty():
        raise InvalidQuery("an empty report cannot be signed: write at least the findings or the impression")
    current = next((r for r in rows if r.status == "signed"), None)
    version = previous_version + 1
    cited = [k.sop_uid for k in view.key_images] + [c.document_uid for c in view.ai_findings]
    headers = _headers(archive, partition, cited + ([current.sr_uid] if current is not None else []))
    missing = [u for u in [k.sop_uid for k in view.key_images] + [c.document_uid for c in view.ai_findings]
               if u not in headers]  # fmt: skip
    if missing:
        raise Conflict(f"a cited object ({missing[0]}) is no longer in the study; save the draft again")
    content = SignedContent(
        report_id=report_id, version=version, title=template_for(draft.modality).title, sections=view.sections,
        signer_name=signer_name, signed_at=signed_at, institution=archive.settings.institution_name,
        study=_study_header(archive, partition, study_uid), key_images=[headers[k.sop_uid] for k in view.key_images],
        cited=[(c, headers[c.document_uid]) for c in view.ai_findings],
        predecessor=headers.get(current.sr_uid) if current is not None else None,
    )  # fmt: skip
    sr = build_sr(content)
    pdf = encapsulate(content, render_pdf(content))
    kos = build_kos(content) if content.key_images else None
    label = f"report {report_id} version {version}"
    for ds in (sr, pdf, kos):
        if ds is not None:
            _store(archive, partition, ds, label)
    superseded = current.id if current is not None else None
    with write_transaction(archive.engine) as conn:
        if latest_version_number(conn, partition, study_uid) != previous_version:
            raise Conflict("another version of this report was signed meanwhile; review it and sign again")
        done = conn.execute(update(ReportRow).where(ReportRow.id == report_id, ReportRow.status == "draft").values(
            status="signed", version=version, supersedes_id=superseded, signer_name=signer_name[:128],
            signed_by=signed_by[:64], signed_at=signed_at, sr_uid=str(sr.SOPInstanceUID),
            pdf_uid=str(pdf.SOPInstanceUID), kos_uid=str(kos.SOPInstanceUID) if kos is not None else "",
            updated_at=utcnow())).rowcount  # fmt: skip
        if done != 1:
            raise Conflict("this version of the report is already signed")
        if superseded is not None:
            replaced = conn.execute(update(ReportRow).where(ReportRow.id == superseded, ReportRow.status == "signed")
                                    .values(status="superseded", updated_at=utcnow())).rowcount  # fmt: skip
            if replaced != 1:
                raise Conflict("another version of this report was signed meanwhile; review it and sign again")
            if current is not None:  # its documents: staff only from now on
                withhold_superseded(conn, _documents(conn, partition, study_uid, [
                    current.sr_uid, current.pdf_uid, current.kos_uid]), str(sr.SOPInstanceUID), partition)
        record_event(conn, EVENT_REPORT_SIGNED, study_uid, series_uid=str(sr.SeriesInstanceUID), detail={
            "report_id": report_id, "version": version, "supersedes": superseded, "sr_uid": str(sr.SOPInstanceUID),
            "pdf_uid": str(pdf.SOPInstanceUID)}, partition=partition)  # fmt: skip
    return draft_view(archive, partition, study_uid, report_id), superseded


def _audit_signature(archive: Archive, principal: Principal | None, view: ReportView, superseded: int | None, *,
                     source: str, username: str = "") -> None:  # fmt: skip
    action = Action.REPORT_AMEND if superseded is not None else Action.REPORT_SIGN
    detail = (f"report {view.id} signed as version {view.version} by {view.signer_name}"
              + (f", superseding report {superseded}" if superseded is not None else "")
              + f" (SR {view.sr_uid}, PDF {view.pdf_uid}{', KOS ' + view.kos_uid if view.kos_uid else ''})")
    event = AuditEvent.by(principal, action, study_uid=view.study_uid, detail=detail[:500], source=source)
    if principal is None:
        event = AuditEvent.by(None, action, study_uid=view.study_uid, detail=detail[:500], source=source,
                              username=username[:64])  # fmt: skip
    record(archive.engine, event)


def sign_draft(archive: Archive, principal: Principal, study_uid: str, report_id: int, *,
               source: str = "") -> ReportView:  # fmt: skip
    """Sign draft ``report_id`` as ``principal`` (the verifying observer), now."""
    view, superseded = _sign(archive, principal.home_partition, study_uid, report_id,
                             signer_name=signer_name_of(archive, principal),
                             signed_by=principal.username, signed_at=utcnow())  # fmt: skip
    _audit_signature(archive, principal, view, superseded, source=source)
    return view


def sign_external_report(archive: Archive, study_uid: str, author_name: str, sections: ReportSections,
                         signed_at: datetime, *, modality: str = "", source: str = "hl7",
                         partition: int = DEFAULT_PARTITION) -> ReportView:  # fmt: skip
    """Store a report already signed outside the archive (a RIS result) as the next version of
    ``partition``'s study.

    ``author_name`` ("Jane Doe") is the verifying observer and ``signed_at`` (timezone-aware) the
    verification time; the report supersedes the current signed version, if any, exactly as an
    amendment does. A physician's open draft stays a draft. Raises NotFound (no such study),
    InvalidQuery (no text or no author) and StorageUnavailable (the documents could not be stored).
    """
    if not author_name.strip():
        raise InvalidQuery("an external report needs its author's name")
    if signed_at.tzinfo is None:
        raise InvalidQuery("the signing time must say its time zone")
    if sections.is_empty():
        raise InvalidQuery("an empty report cannot be stored")
    report_id = insert_draft(archive, partition, study_uid, DraftRequest(sections=sections, modality=modality), [],
                             author="", source="external", beside_draft=True)  # fmt: skip
    try:
        view, superseded = _sign(archive, partition, study_uid, report_id, signer_name=author_name.strip(),
                                 signed_by="", signed_at=signed_at)  # fmt: skip
    except BaseException:
        with write_transaction(archive.engine) as conn:  # nobody's work: not left behind as a draft
            conn.execute(delete(ReportRow).where(ReportRow.id == report_id, ReportRow.status == "draft"))
        raise
    _audit_signature(archive, None, view, superseded, source=source, username=author_name)
    return view


def _documents(conn: Connection, partition: int, study_uid: str, sop_uids: list[str]) -> list[tuple[str, str, str]]:
    """(study, series, SOP) UIDs of ``partition``'s stored documents among ``sop_uids``."""
    wanted = [u for u in sop_uids if u]
    rows = conn.execute(select(Series.series_uid, Instance.sop_uid).join(Series, Series.id == Instance.series_fk)
                        .where(Instance.partition_fk == partition, Instance.sop_uid.in_(wanted))).all() \
        if wanted else []  # fmt: skip
    return [(study_uid, series, sop_uid) for series, sop_uid in rows]
