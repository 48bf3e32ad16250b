"""Share links: one study, opened at ``/s/{token}`` by whoever holds the token (and the PIN).

The token is ``HMAC-SHA256(secret key, random salt)`` truncated to 160 bits: the database keeps the
salt and the token's SHA-256 only, so a copy of the database alone opens nothing, while the owner
can still be shown the link and its QR code again. Five wrong PINs (or birth dates, when a patient
claims the study) lock the link for 15 minutes.

A share made for a clinician elsewhere also carries a DICOMweb bearer token (``cfs_…``, derived the
same way from the same salt under another label, kept as its SHA-256): with the archive's
``/dicomweb`` URL it reads the one study over QIDO-RS and WADO-RS, for as long as the link lives.
Revoking the link revokes the token; the PIN guards the phone page only.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pacs.accounts.errors import InvalidAccountData
from pacs.accounts.hashing import derive_token, digest, hash_secret, verify_secret
from pacs.accounts.models import Share, User
from pacs.accounts.patients import link_patient
from pacs.accounts.principal import DicomwebGrant, ShareGrant
from pacs.accounts.tx import aware, aware_or_none, reading, writing
from pacs.errors import NotFound
from pacs.index.db import utcnow
from pacs.index.models import Study
from pacs.notify.messages import first_name
from pacs.notify.outbox import share_delivery

MAX_TRIES = 5
LOCK_FOR = timedelta(minutes=15)
_PIN = re.compile(r"^[0-9]{4,12}$")
#: How a share's DICOMweb bearer token starts (API keys start ``cfk_``, JWTs ``ey``).
DICOMWEB_TOKEN_PREFIX = "cfs_"
RECIPIENT_MAX = 128


class ShareStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class ShareInfo:
    id: int
    study_uid: str
    token: str | None  # None when no key was given to derive it
    created_by: str  # username ("" once the account is gone)
    created_at: datetime
    expires_at: datetime
    has_pin: bool
    allow_download: bool
    views: int
    last_viewed_at: datetime | None
    revoked_at: datetime | None
    locked_until: datetime | None
    created_by_name: str = ""  # the creator's full name (else username), as the visitor is told who shared
    clinician: bool = False  # made for a clinician: carries a DICOMweb bearer token
    recipient: str = ""  # whom it was made for, in the sharer's words
    dicomweb_token: str | None = None  # clinician shares, when a key was given to derive it
    partition: int = 1  # the study's partition (pacs.partitions): the share opens it there only

    def status(self, now: datetime | None = None) -> ShareStatus:
        if self.revoked_at is not None:
            return ShareStatus.REVOKED
        if (now or utcnow()) >= self.expires_at:
            return ShareStatus.EXPIRED
        return ShareStatus.ACTIVE

    def locked(self, now: datetime | None = None) -> bool:
        return self.locked_until is not None and (now or utcnow()) < self.locked_until

    def grant(self) -> ShareGrant:
        return ShareGrant(self.id, self.study_uid, self.allow_download, self.partition)

    def dicomweb_grant(self) -> DicomwebGrant:
        return DicomwebGrant(self.id, self.study_uid, self.partition)


def dicomweb_token(key: bytes, salt: str) -> str:
    """The DICOMweb bearer token of the clinician share with ``salt``: another HMAC label than the link's."""
    return DICOMWEB_TOKEN_PREFIX + derive_token(key, "dicomweb:" + salt)


def _info(share: Share, key: bytes | None, created_by: tuple[str, str]) -> ShareInfo:
    clinician = share.dicomweb_token_hash is not None
    return ShareInfo(
        id=share.id, study_uid=share.study_uid, token=derive_token(key, share.token_salt) if key else None,
        created_by=created_by[0], created_by_name=created_by[1], created_at=aware(share.created_at),
        expires_at=aware(share.expires_at),
        has_pin=share.pin_hash is not None, allow_download=share.allow_download, views=share.views,
        last_viewed_at=aware_or_none(share.last_viewed_at), revoked_at=aware_or_none(share.revoked_at),
        locked_until=aware_or_none(share.locked_until), clinician=clinician, recipient=share.recipient or "",
        dicomweb_token=dicomweb_token(key, share.token_salt) if key and clinician else None,
        partition=share.partition_fk,
    )


def _creator(session: Session, share: Share) -> tuple[str, str]:
    """The creating account's username and its name for people (full name, else username)."""
    user = session.get(User, share.created_by_fk) if share.created_by_fk is not None else None
    return (user.username, user.full_name or user.username) if user else ("", "")


def create_share(
    engine: Engine, key: bytes, study_uid: str, *, created_by: int | None, expires_in_days: int,
    max_days: int, pin: str | None = None, allow_download: bool = False, clinician: bool = False,
    recipient: str = "", notify: Sequence[tuple[str, str]] = (), greet_patient: bool = False, partition: int = 1,
) -> ShareInfo:
    """A new link to ``study_uid`` (which must exist), valid for ``expires_in_days`` (1..max_days);
    with ``clinician``, also a DICOMweb bearer token for the clinician ``recipient`` names.

    ``notify`` names the (channel, address) pairs the link is sent to, as messages owed in the same
    transaction (:mod:`pacs.notify.outbox`); ``greet_patient`` greets them by the patient's first
    name (when staff send the patient the link, not when the patient passes it on)."""
    if not 1 <= expires_in_days <= max_days:
        raise InvalidAccountData(f"a share link lasts 1 to {max_days} days")
    if pin is not None and not _PIN.match(pin):
        raise InvalidAccountData("a PIN is 4 to 12 digits")
    recipient = recipient.strip()
    if len(recipient) > RECIPIENT_MAX or not recipient.isprintable():
        raise InvalidAccountData(f"the recipient is at most {RECIPIENT_MAX} printable characters")
    now = utcnow()
    with writing(engine) as session:
        study = session.scalars(select(Study).where(Study.partition_fk == partition,
                                                    Study.study_uid == study_uid)).first()
        if study is None:
            raise NotFound("the study does not exist")
        salt = secrets.token_hex(16)
        share = Share(
            token_hash=digest(derive_token(key, salt)), token_salt=salt, study_uid=study_uid,
            created_by_fk=created_by, created_at=now, expires_at=now + timedelta(days=expires_in_days),
            pin_hash=hash_secret(pin) if pin else None, failed_tries=0, locked_until=None,
            allow_download=allow_download, views=0, last_viewed_at=None, revoked_at=None,
            dicomweb_token_hash=digest(dicomweb_token(key, salt)) if clinician else None, recipient=recipient,
            partition_fk=partition,
        )
        session.add(share)
        session.flush()
        info = _info(share, key, _creator(session, share))
        first = first_name(study.patient_name) if greet_patient else ""
        for channel, address in notify:
            share_delivery(session.connection(), share_id=share.id, study_uid=study_uid, channel=channel,
                           recipient=address, first=first, created_by=info.created_by, partition=partition)  # fmt: skip
        return info


def list_shares(engine: Engine, key: bytes | None, study_uid: str, partition: int = 1) -> list[ShareInfo]:
    with reading(engine) as session:
        rows = session.scalars(select(Share).where(Share.partition_fk == partition, Share.study_uid == study_uid)
                               .order_by(Share.id))
        return [_info(s, key, _creator(session, s)) for s in rows]


def get_share(engine: Engine, key: bytes | None, study_uid: str, share_id: int, partition: int = 1) -> ShareInfo:
    with reading(engine) as session:
        share = session.get(Share, share_id)
        if share is None or share.study_uid != study_uid or share.partition_fk != partition:
            raise NotFound("there is no such share link")
        return _info(share, key, _creator(session, share))


def revoke_share(engine: Engine, study_uid: str, share_id: int, partition: int = 1) -> ShareInfo:
    """Revoke a link of ``study_uid`` (idempotent); visitors holding it lose access at once."""
    with writing(engine) as session:
        share = session.get(Share, share_id)
        if share is None or share.study_uid != study_uid or share.partition_fk != partition:
            raise NotFound("there is no such share link")
        if share.revoked_at is None:
            share.revoked_at = utcnow()
        return _info(share, None, _creator(session, share))


def find_share(engine: Engine, token: str) -> ShareInfo | None:
    """The link this token opens (active or not), or ``None`` for a token that was never issued."""
    if not token or len(token) > 128:
        return None
    with reading(engine) as session:
        share = session.scalars(select(Share).where(Share.token_hash == digest(token))).first()
        return None if share is None else _info(share, None, _creator(session, share))


def find_dicomweb_share(engine: Engine, token: str) -> ShareInfo | None:
    """The clinician share this DICOMweb bearer token belongs to (active or not), or ``None``."""
    if not token.startswith(DICOMWEB_TOKEN_PREFIX) or len(token) > 128:
        return None
    with reading(engine) as session:
        share = session.scalars(select(Share).where(Share.dicomweb_token_hash == digest(token))).first()
        return None if share is None else _info(share, None, ("", ""))


def active_grant(engine: Engine, share_id: int) -> ShareGrant | None:
    """The grant of a still-active link (for validating a share session on each request)."""
    with reading(engine) as session:
        share = session.get(Share, share_id)
        if share is None or share.revoked_at is not None or utcnow() >= aware(share.expires_at):
            return None
        return ShareGrant(share.id, share.study_uid, share.allow_download, share.partition_fk)


def record_view(engine: Engine, share_id: int) -> None:
    with writing(engine) as session:
        share = session.get(Share, share_id)
        if share is not None:
            share.views += 1
            share.last_viewed_at = utcnow()


class Check(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class CheckResult:
    result: Check
    tries_left: int = MAX_TRIES
    locked_until: datetime | None = None


def _check(share: Share, ok: bool, now: datetime) -> CheckResult:
    locked = aware_or_none(share.locked_until)
    if locked is not None and now < locked:
        return CheckResult(Check.LOCKED, 0, locked)
    if ok:
        share.failed_tries = 0
        share.locked_until = None
        return CheckResult(Check.OK)
    share.failed_tries += 1
    if share.failed_tries >= MAX_TRIES:
        share.failed_tries = 0
        share.locked_until = now + LOCK_FOR
        return CheckResult(Check.LOCKED, 0, share.locked_until)
    return CheckResult(Check.WRONG, MAX_TRIES - share.failed_tries)


def check_pin(engine: Engine, share_id: int, pin: str) -> CheckResult:
    """Compare ``pin`` with the link's PIN, counting wrong tries and locking after five."""
    with writing(engine) as session:
        share = session.get(Share, share_id)
        if share is None:
            raise NotFound("there is no such share link")
        now = utcnow()
        locked = aware_or_none(share.locked_until)
        if locked is not None and now < locked:  # no argon2 work while locked
            return CheckResult(Check.LOCKED, 0, locked)
        return _check(share, share.pin_hash is None or verify_secret(share.pin_hash, pin), now)


def _birth_date(value: str) -> str:
    digits = value.strip().replace("-", "")
    if not re.fullmatch(r"[0-9]{8}", digits):
        raise InvalidAccountData("enter the birth date as YYYY-MM-DD")
    return digits


def claim_study(engine: Engine, share_id: int, username: str, birth_date: str) -> CheckResult:
    """A signed-in patient who holds the link adds the study's patient to the account by birth date."""
    given = _birth_date(birth_date)
    with writing(engine) as session:
        share = session.get(Share, share_id)
        if share is None:
            raise NotFound("there is no such share link")
        study = session.scalars(select(Study).where(Study.partition_fk == share.partition_fk,
                                                    Study.study_uid == share.study_uid)).first()
        if study is None:
            raise NotFound("the study does not exist")
        ok = bool(study.birth_date) and study.birth_date == given
        result = _check(share, ok, utcnow())
        patient_id, issuer = study.patient_id, study.issuer
    if result.result is Check.OK:
        link_patient(engine, username, patient_id, issuer)
    return result
