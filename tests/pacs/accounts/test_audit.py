"""The audit trail: append-only, queryable, exportable as DICOM audit messages (PS3.15 A.5)."""

from __future__ import annotations

from datetime import timedelta
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from pacs.accounts.audit import Action, AuditEvent, AuditQuery, Outcome, count_failures, query, record
from pacs.accounts.audit_dicom import export_xml
from pacs.accounts.principal import Principal, ShareGrant
from pacs.index.db import utcnow


def test_record_and_query(engine: Engine) -> None:
    doc = Principal(user_id=3, username="doc", role="physician")
    assert record(engine, AuditEvent.by(doc, Action.VIEW, study_uid="1.2.3", source="10.0.0.5"))
    assert record(engine, AuditEvent.by(doc, Action.SEARCH, detail="PatientName=Doe*"))
    visitor = Principal(share=ShareGrant(9, "1.2.3", False), via="share")
    assert record(engine, AuditEvent.by(visitor, Action.SHARE_OPEN, study_uid="1.2.3"))
    assert record(engine, AuditEvent(Action.LOGIN, Outcome.FAILURE, username="mallory", source="10.0.0.9"))

    events = query(engine, AuditQuery())
    assert [e.action for e in events] == ["login", "share-open", "search", "view"]  # newest first
    assert events[1].share_id == 9 and events[1].username == ""
    assert [e.action for e in query(engine, AuditQuery(study_uid="1.2.3"))] == ["share-open", "view"]
    assert [e.action for e in query(engine, AuditQuery(username="doc"))] == ["search", "view"]
    assert query(engine, AuditQuery(since=utcnow() + timedelta(minutes=1))) == []
    assert count_failures(engine, Action.LOGIN, utcnow() - timedelta(minutes=5), username="mallory") == 1
    assert count_failures(engine, Action.LOGIN, utcnow() - timedelta(minutes=5), source="10.0.0.9") == 1
    assert count_failures(engine, Action.LOGIN, utcnow() - timedelta(minutes=5), username="doc") == 0


@pytest.mark.parametrize("statement", ["UPDATE audit_events SET outcome = 'success'", "DELETE FROM audit_events"])
def test_trail_is_append_only(engine: Engine, statement: str) -> None:
    record(engine, AuditEvent(Action.LOGIN, Outcome.FAILURE, username="mallory"))
    with pytest.raises(SQLAlchemyError), engine.begin() as conn:
        conn.execute(text(statement))
    assert query(engine, AuditQuery())[0].outcome == "failure"


def test_record_never_raises(tmp_path: object) -> None:
    from sqlalchemy import create_engine

    broken = create_engine("sqlite:///file:missing?mode=ro&uri=true")
    assert record(broken, AuditEvent(Action.VIEW)) is False


def test_dicom_audit_message_export(engine: Engine) -> None:
    record(engine, AuditEvent(Action.VIEW, username="doc", role="physician", study_uid="1.2.3", patient_id="P1",
                              source="10.0.0.5"))
    record(engine, AuditEvent(Action.LOGIN, Outcome.FAILURE, username="mallory", source="10.0.0.9"))
    xml = export_xml(query(engine, AuditQuery(newest_first=False)), "CLOUDFILM")
    root = ET.fromstring(xml)
    view, login = root.findall("AuditMessage")
    ident = view.find("EventIdentification")
    assert ident is not None and ident.get("EventActionCode") == "R" and ident.get("EventOutcomeIndicator") == "0"
    event_id = ident.find("EventID")
    assert event_id is not None and event_id.get("csd-code") == "110103" and event_id.get("codeSystemName") == "DCM"
    participant = view.find("ActiveParticipant")
    assert participant is not None and participant.get("UserID") == "doc"
    assert participant.get("NetworkAccessPointID") == "10.0.0.5"
    assert participant.get("NetworkAccessPointTypeCode") == "2"
    source = view.find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID") == "CLOUDFILM"
    objects = {o.get("ParticipantObjectID"): o for o in view.findall("ParticipantObjectIdentification")}
    study_code = objects["1.2.3"].find("ParticipantObjectIDTypeCode")
    assert study_code is not None and study_code.get("csd-code") == "110180"
    assert objects["P1"].get("ParticipantObjectTypeCode") == "1"
    login_ident = login.find("EventIdentification")
    assert login_ident is not None and login_ident.get("EventOutcomeIndicator") == "4"
    type_code = login_ident.find("EventTypeCode")
    assert type_code is not None and type_code.get("csd-code") == "110122"
