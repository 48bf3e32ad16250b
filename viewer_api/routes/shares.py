"""Share links of a study: create, list, revoke, and their QR codes (``/api/studies/{uid}/shares``).

A physician or an admin may share any study; a patient only the studies linked to the account.
The link's token is never stored; the owner is shown the URL (and QR code) again on request. A
link made with an e-mail address (or a phone number) is also sent there, through the job queue
(:mod:`pacs.notify`). Answers carry ``warnings`` when the link could not work outside this machine.

A share made ``for_clinician`` (a doctor at another hospital) also answers with the archive's
DICOMweb base URL and a read-only bearer token for that one study: what ``dicomweb-client``,
OHIF (``ohif_url`` opens this archive's OHIF with it) and ``cloudfilm import-share`` take.
"""

from __future__ import annotations

import io
from datetime import datetime
from urllib.parse import urlencode

import segno
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from pacs.accounts.audit import Action
from pacs.accounts.principal import Principal, scope_for
from pacs.accounts.shares import ShareInfo, create_share, get_share, list_shares, revoke_share
from pacs.notify.addresses import check_email, check_phone
from viewer_api.auth.access import Sharer
from viewer_api.auth.dependencies import audit, authenticator_of
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.banner import is_loopback
from viewer_api.context import archive_of
from viewer_api.viewer.model import StudyHeader, study_header

router = APIRouter(tags=["shares"], route_class=DeclaredRoute)


class ShareRequest(BaseModel):
    expires_in_days: int | None = Field(default=None, ge=1, description="default: CLOUDFILM_SHARE_DEFAULT_DAYS")
    pin: str | None = Field(default=None, description="4 to 12 digits; asked before the study opens")
    allow_download: bool = False
    email: str | None = Field(default=None, max_length=254,
                              description="send the link to this address (needs CLOUDFILM_SMTP_HOST)")
    phone: str | None = Field(default=None, max_length=32,
                              description="text the link to this number in +E.164 form (CLOUDFILM_SMS_WEBHOOK_URL)")
    for_clinician: bool = Field(default=False, description="also give a read-only DICOMweb token for this study")
    recipient: str = Field(default="", max_length=128, description="whom it is for (the clinician, the hospital)")


class ShareOut(BaseModel):
    id: int
    url: str
    qr_png: str
    qr_svg: str
    study_uid: str
    created_at: datetime
    created_by: str
    expires_at: datetime
    status: str
    has_pin: bool
    allow_download: bool
    views: int
    last_viewed_at: datetime | None
    revoked_at: datetime | None
    locked_until: datetime | None
    for_clinician: bool
    recipient: str
    dicomweb_url: str | None  # clinician shares: the DICOMweb base URL (QIDO-RS, WADO-RS) …
    dicomweb_token: str | None  # … and the bearer token that reads the one study there
    ohif_url: str | None  # clinician shares, when OHIF is installed: the study in OHIF, token included
    warnings: list[str] = Field(default_factory=list, description="why the link may not open elsewhere")


def link_warnings(request: Request, *, mailed: bool = False) -> list[str]:
    """Sentences for a link that only this machine can open: no ``CLOUDFILM_PUBLIC_URL`` while the
    server listens on (or is reached at) a loopback address; a mailed link uses the listener's
    address, so one bound to every address is no better."""
    settings = archive_of(request).settings
    if settings.public_url:
        return []
    host = settings.http_host.strip("[]")
    reached = request.url.hostname or ""
    if is_loopback(host) or is_loopback(reached) or (mailed and host in ("", "0.0.0.0", "::")):
        where = settings.base_url if mailed else base_url(request)
        return [f"This link points at {where}, which only this computer can open: set CLOUDFILM_PUBLIC_URL "
                "to the address phones and other computers reach the archive at, then share again."]
    return []


def base_url(request: Request) -> str:
    configured = archive_of(request).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


def share_url(request: Request, token: str) -> str:
    return f"{base_url(request)}/s/{token}"


def _ohif_url(request: Request, share: ShareInfo) -> str | None:
    if share.dicomweb_token is None or archive_of(request).settings.ohif_dir is None:
        return None
    query = urlencode({"StudyInstanceUIDs": share.study_uid, "token": share.dicomweb_token})
    return f"{base_url(request)}/ohif/viewer?{query}"


def _out(request: Request, share: ShareInfo, warnings: list[str] | None = None) -> ShareOut:
    api = f"/api/studies/{share.study_uid}/shares/{share.id}"
    clinician = share.dicomweb_token is not None
    return ShareOut(
        warnings=link_warnings(request) if warnings is None else warnings,
        id=share.id, url=share_url(request, share.token or ""), qr_png=f"{api}/qr.png", qr_svg=f"{api}/qr.svg",
        study_uid=share.study_uid, created_at=share.created_at, created_by=share.created_by,
        expires_at=share.expires_at, status=share.status().value, has_pin=share.has_pin,
        allow_download=share.allow_download, views=share.views, last_viewed_at=share.last_viewed_at,
        revoked_at=share.revoked_at, locked_until=share.locked_until, for_clinician=share.clinician,
        recipient=share.recipient, dicomweb_url=f"{base_url(request)}/dicomweb" if clinician else None,
        dicomweb_token=share.dicomweb_token, ohif_url=_ohif_url(request, share),
    )


def shareable_study(request: Request, principal: Principal, study_uid: str) -> StudyHeader:
    """The study, if ``principal`` (admitted by ``SHARERS``) may manage its links: staff, or the
    patient who owns it."""
    header = study_header(archive_of(request).engine, scope_for(principal), study_uid)  # 404 if not visible
    if principal.role == "patient" and (header.patient_id, header.issuer) not in principal.patient_keys:
        raise HTTPException(403, "only the patient the study belongs to, or a physician, may share it")
    return header


@router.post("/api/studies/{study_uid}/shares", status_code=201, response_model=ShareOut)
def create(principal: Sharer, request: Request, study_uid: str, body: ShareRequest) -> ShareOut:
    """Create a share link for one study (PS: the answer's ``url`` is what the patient opens)."""
    header = shareable_study(request, principal, study_uid)
    auth = authenticator_of(request)
    settings = archive_of(request).settings
    notify = _recipients(request, body)
    share = create_share(
        auth.engine, auth.key, study_uid, created_by=principal.user_id,
        expires_in_days=body.expires_in_days or min(settings.share_default_days, settings.share_max_days),
        max_days=settings.share_max_days, pin=body.pin or None, allow_download=body.allow_download,
        clinician=body.for_clinician, recipient=body.recipient,
        notify=notify, greet_patient=principal.role != "patient", partition=principal.home_partition,
    )
    sent_to = "".join(f", sent by {channel} to {address}" for channel, address in notify)
    audit(request, Action.SHARE_CREATE, study_uid=study_uid, patient_id=header.patient_id,
          detail=f"share {share.id}, expires {share.expires_at:%Y-%m-%d}, pin={share.has_pin}, "
                 f"download={share.allow_download}{sent_to}"
                 + (f", DICOMweb token for {share.recipient or 'a clinician'}" if share.clinician else ""))
    warnings = link_warnings(request, mailed=bool(notify))
    return _out(request, share, warnings)


def _recipients(request: Request, body: ShareRequest) -> list[tuple[str, str]]:
    """The (channel, address) pairs the new link goes to; 400 for an address no sender can take."""
    settings = archive_of(request).settings
    notify: list[tuple[str, str]] = []
    if body.email:
        if not settings.smtp_host:
            raise HTTPException(400, "e-mail is not set up on this archive (CLOUDFILM_SMTP_HOST): "
                                     "share the link by hand")
        notify.append(("email", check_email(body.email)))
    if body.phone:
        if not settings.sms_webhook_url:
            raise HTTPException(400, "text messages are not set up on this archive (CLOUDFILM_SMS_WEBHOOK_URL)")
        notify.append(("sms", check_phone(body.phone)))
    return notify


@router.get("/api/studies/{study_uid}/shares", response_model=list[ShareOut])
def index(principal: Sharer, request: Request, study_uid: str) -> list[ShareOut]:
    """The study's share links, newest last, with their status and view counts."""
    shareable_study(request, principal, study_uid)
    auth = authenticator_of(request)
    return [_out(request, s) for s in list_shares(auth.engine, auth.key, study_uid, principal.home_partition)]


@router.delete("/api/studies/{study_uid}/shares/{share_id}", status_code=204)
def revoke(principal: Sharer, request: Request, study_uid: str, share_id: int) -> Response:
    """Revoke a link: whoever holds it loses access at once."""
    header = shareable_study(request, principal, study_uid)
    revoke_share(authenticator_of(request).engine, study_uid, share_id, principal.home_partition)
    audit(request, Action.SHARE_REVOKE, study_uid=study_uid, patient_id=header.patient_id, detail=f"share {share_id}")
    return Response(status_code=204)


def qr_code(url: str, kind: str) -> bytes:
    """The URL as a QR code (error correction M, 2-module quiet zone as scanners allow)."""
    buf = io.BytesIO()
    segno.make(url, error="m").save(buf, kind=kind, scale=8, border=2, dark="#000", light="#fff")
    return buf.getvalue()


@router.get("/api/studies/{study_uid}/shares/{share_id}/qr.{kind}")
def qr(principal: Sharer, request: Request, study_uid: str, share_id: int, kind: str) -> Response:
    """The share link as a QR code, ``qr.png`` or ``qr.svg``."""
    if kind not in ("png", "svg"):
        raise HTTPException(404, "QR codes are qr.png or qr.svg")
    shareable_study(request, principal, study_uid)
    auth = authenticator_of(request)
    share = get_share(auth.engine, auth.key, study_uid, share_id, principal.home_partition)
    media = "image/png" if kind == "png" else "image/svg+xml"
    headers = {"Cache-Control": "private, no-store"}
    if warnings := link_warnings(request):
        headers["Warning"] = f'299 cloudfilm "{warnings[0]}"'
    return Response(qr_code(share_url(request, share.token or ""), kind), media_type=media, headers=headers)
