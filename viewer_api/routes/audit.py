"""The audit trail over HTTP: ``GET /api/audit`` (admins: everything; patients: who opened theirs)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from pacs.access import AccessScope
from pacs.accounts.audit import ACCESS_ACTIONS, AuditEvent, AuditQuery
from pacs.accounts.audit import query as audit_query
from pacs.accounts.audit_dicom import export_xml
from pacs.query import Level, QueryRequest, run_query
from viewer_api.auth.access import AdminOrPatient
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["audit"], route_class=DeclaredRoute)


class AuditOut(BaseModel):
    id: int | None
    at: datetime | None
    action: str
    outcome: str
    username: str
    role: str
    share_id: int | None
    study_uid: str
    patient_id: str
    source: str
    detail: str


def _when(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"{name} must be an ISO 8601 date or date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _out(event: AuditEvent) -> AuditOut:
    return AuditOut(id=event.id, at=event.at, action=str(event.action), outcome=str(event.outcome),
                    username=event.username, role=event.role, share_id=event.share_id, study_uid=event.study_uid,
                    patient_id=event.patient_id, source=event.source, detail=event.detail)


@router.get("/api/audit", response_model=list[AuditOut])
def read_audit(
    principal: AdminOrPatient,
    request: Request,
    study: str | None = Query(None, description="StudyInstanceUID"),
    user: str | None = Query(None, description="username"),
    action: str | None = Query(None),
    since: str | None = Query(None, description="ISO 8601"),
    until: str | None = Query(None, description="ISO 8601"),
    limit: int = Query(200, ge=1, le=10_000),
    offset: int = Query(0, ge=0),
    format: str = Query("json", pattern="^(json|dicom)$", description="json, or dicom: PS3.15 A.5 XML"),
    partition: str | None = Query(None, description="an admin of the default partition: another partition's slug"),
) -> Response:
    """Audit events, newest first. Admins see their partition's; a patient sees who opened the patient's
    studies."""
    # Like every route without a partition in its URL, the trail is the caller's partition's; an admin
    # of the default partition (who acts in every one) names another with ?partition=slug.
    where = principal.partition
    if partition is not None:
        found = archive_of(request).partitions.by_slug(partition)
        if found is None or not (principal.in_every_partition or found.id == principal.partition):
            raise HTTPException(404, "no such partition")
        where = found.id
    q = AuditQuery(study_uid=study, username=user, action=action, since=_when(since, "since"),
                   until=_when(until, "until"), limit=limit, offset=offset, partition=where)
    engine = archive_of(request).engine
    if principal.role == "patient":
        own = [str(m.get("StudyInstanceUID")) for m in run_query(engine, QueryRequest(
            level=Level.STUDY, scope=AccessScope(patient_keys=principal.patient_keys,
                                                 hidden_study_uids=principal.hidden_study_uids,
                                                 partition=principal.partition), limit=10_000))]
        q = AuditQuery(study_uid=study, action=action, since=q.since, until=q.until, limit=limit, offset=offset,
                       study_uids=own, actions=ACCESS_ACTIONS, exclude_user_id=principal.user_id,
                       partition=principal.partition)
    events = audit_query(engine, q)
    if format == "dicom":
        xml = export_xml(events, archive_of(request).settings.ae_title)
        return Response(xml, media_type="application/xml", headers={"Cache-Control": "no-store"})
    body = "[" + ",".join(_out(e).model_dump_json() for e in events) + "]"
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})
