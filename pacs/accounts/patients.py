"""Patient links: a patient account owns the studies of one (PatientID, IssuerOfPatientID)."""

from __future__ import annotations

from sqlalchemy import Engine, select

from pacs.accounts.errors import InvalidAccountData
from pacs.accounts.models import PatientLink
from pacs.accounts.tx import writing
from pacs.accounts.users import UserInfo, user_info, user_row
from pacs.index.db import utcnow


def link_patient(engine: Engine, username: str, patient_id: str, issuer: str = "") -> UserInfo:
    """Give the patient account ``username`` the studies of ``patient_id`` (+ ``issuer``); idempotent."""
    if not patient_id or len(patient_id) > 64 or len(issuer) > 64:
        raise InvalidAccountData("a PatientID is 1 to 64 characters and an issuer at most 64")
    with writing(engine) as session:
        user = user_row(session, username)
        if user.role != "patient":
            raise InvalidAccountData(f"{username!r} is a {user.role} account; only patient accounts are linked")
        exists = session.scalars(
            select(PatientLink.id).where(
                PatientLink.user_fk == user.id, PatientLink.patient_id == patient_id, PatientLink.issuer == issuer
            )
        ).first()
        if exists is None:
            session.add(PatientLink(user_fk=user.id, patient_id=patient_id, issuer=issuer, created_at=utcnow()))
            session.flush()
        return user_info(session, user)


def unlink_patient(engine: Engine, username: str, patient_id: str, issuer: str = "") -> UserInfo:
    with writing(engine) as session:
        user = user_row(session, username)
        for link in session.scalars(
            select(PatientLink).where(
                PatientLink.user_fk == user.id, PatientLink.patient_id == patient_id, PatientLink.issuer == issuer
            )
        ):
            session.delete(link)
        session.flush()
        return user_info(session, user)
