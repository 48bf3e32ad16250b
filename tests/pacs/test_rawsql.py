"""Statements run on the DBAPI cursor behave as SQLAlchemy's own execution would (pacs.index.rawsql)."""

from __future__ import annotations

import pytest
import sqlalchemy
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.index.models import OutboxEvent, Patient
from pacs.index.rawsql import RawStatement
from tests.upstream import source_sha256


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


#: The SQLAlchemy code whose behaviour pacs.index.rawsql reproduces or calls, with the SHA-256 of its
#: source in the version pyproject.toml pins (2.1.9).
MIRRORED = {
    # how parameters are ordered (positiontup) and converted (bind processors) for one execution
    "sqlalchemy.engine.default:DefaultExecutionContext._init_compiled":
        "1d7824a7976a7d978e4b0e96ab5f5cc200d27aab9cae2766a1c99198a0204557",
    "sqlalchemy.sql.compiler:SQLCompiler._bind_processors":
        "433762847b349eab79a23c4ae0812ab2a23b30c91f1ba28845f4059cbbffceac",
    "sqlalchemy.sql.compiler:SQLCompiler.construct_params":
        "cffacc6a805f478e709dc0cf0a565de58acbb50edae78091d90d6e16156be62e",
    # how DBAPI errors are wrapped and a dead connection dropped from the pool
    "sqlalchemy.engine.base:Connection._handle_dbapi_exception":
        "9ff661c716209c2eb28a0ae12e6567f1a904c954f0bf89fda5e72d8a82e0a0b7",
    "sqlalchemy.exc:DBAPIError.instance":
        "8058b7ea5c2c58801dafa066e14a780f0551d1e004a27f8ca53699b1b9a89147",
}


@pytest.mark.parametrize("path", sorted(MIRRORED))
def test_the_sqlalchemy_code_rawsql_mirrors_is_unchanged(path: str) -> None:
    digest = source_sha256(path)
    assert digest == MIRRORED[path], (
        f"SQLAlchemy {sqlalchemy.__version__} changed {path}, which pacs/index/rawsql.py mirrors: read the new code, "
        f"bring RawStatement in line with it (or drop RawStatement for Connection.execute), then record the new "
        f"hash here ({digest}) and the version in pyproject.toml")


def test_statements_sqlalchemy_rewrites_per_execution_are_refused(local_archive: Archive) -> None:
    expanding = select(Patient.id).where(Patient.id.in_(bindparam("ids", expanding=True)))
    with pytest.raises(ValueError, match="expanding"):
        RawStatement(expanding, local_archive.engine.dialect)
