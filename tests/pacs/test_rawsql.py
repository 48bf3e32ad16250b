"""Statements run on the DBAPI cursor behave as SQLAlchemy's own execution would (pacs.index.rawsql)."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.index.models import OutboxEvent, Patient
from pacs.index.rawsql import RawStatement


def test_values_round_trip_and_errors_are_sqlalchemys(archive: Archive) -> None:
    dialect = archive.engine.dialect
    keys = ["patient_id", "issuer", "patient_name", "patient_name_norm", "birth_date", "sex", "study_count",
            "series_count", "instance_count", "size_bytes", "created_at", "updated_at"]
    add = RawStatement(insert(Patient), dialect, keys)
    read = RawStatement(select(Patient.patient_name, Patient.created_at).where(Patient.patient_id == bindparam("pid")),
                        dialect)
    now = utcnow()
    row = {"patient_id": "P1", "issuer": "", "patient_name": "Müller^Jörg", "patient_name_norm": "MULLER^JORG",
           "birth_date": "", "sex": "", "study_count": 0, "series_count": 0, "instance_count": 0, "size_bytes": 0,
           "created_at": now, "updated_at": now}
    with archive.engine.begin() as conn:
        add.execute(conn, row).close()
    with archive.engine.connect() as conn:
        name, created = read.one_or_none(conn, {"pid": "P1"})
        assert read.one_or_none(conn, {"pid": "nobody"}) is None
    assert name == "Müller^Jörg"
    assert created == add.bound("created_at", now)  # as sent: SQLite's text, PostgreSQL's timestamp
    # What SQLAlchemy reads back is the same instant.
    with archive.engine.connect() as conn:
        stored = conn.execute(select(Patient.created_at)).scalar_one()
    assert stored.replace(tzinfo=None) == now.replace(tzinfo=None)

    with pytest.raises(IntegrityError), archive.engine.begin() as conn:  # uq_patients_id_issuer
        add.execute(conn, row).close()


def test_execute_many_and_python_side_defaults_are_refused(archive: Archive) -> None:
    dialect = archive.engine.dialect
    events = RawStatement(insert(OutboxEvent), dialect, ["event", "study_uid", "series_uid", "sop_uid", "created_at"])
    now = utcnow()
    with archive.engine.begin() as conn:
        events.execute_many(conn, [{"event": "e", "study_uid": f"1.2.{i}", "series_uid": "", "sop_uid": "",
                                    "created_at": now} for i in range(3)])
    with archive.engine.connect() as conn:
        assert len(conn.execute(select(OutboxEvent.id)).all()) == 3
    with pytest.raises(ValueError, match="defaults"):
        RawStatement(insert(Patient), dialect, ["patient_id", "created_at", "updated_at"])  # counts default to 0
