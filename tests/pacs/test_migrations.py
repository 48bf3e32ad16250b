"""Upgrades keep data: an index created at each earlier schema revision, holding rows in every table
it had then (studies, instances, users, shares, jobs, benchmarks, audit …), upgraded to this
version's head on SQLite and PostgreSQL, still holds every row with every value it had. An index a
newer version upgraded is refused with a sentence, never migrated down or run against."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, func, insert, select, text, types

from pacs.archive import Archive
from pacs.errors import SettingsError
from pacs.index import db
from pacs.settings import Settings
from tests.pg import postgres_available, temporary_database

EARLIER = db.revisions()[:-1]
WHEN = dt.datetime(2024, 1, 15, 9, 30, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite3'}"
        return
    if not postgres_available():
        pytest.skip("PostgreSQL not running")
    with temporary_database("cloudfilm_migrate") as url:
        yield url


def _value(column: Any, i: int, n: int, parents: dict[str, list[dict[str, Any]]]) -> Any:
    """A value for ``column`` in the ``i``-th new row (``n`` counts rows across tables) that its type
    (and foreign key: the parent's ``i``-th row) accepts."""
    for fk in column.foreign_keys:
        return parents[fk.column.table.name][i][fk.column.name]
    kind = column.type
    if isinstance(kind, types.Boolean):
        return n % 2 == 1
    if isinstance(kind, types.Integer):
        return 1000 + n
    if isinstance(kind, types.Float | types.Numeric):
        return 0.25 + n if isinstance(kind, types.Float) else decimal.Decimal("0.25") + n
    if isinstance(kind, types.DateTime):
        return WHEN + dt.timedelta(minutes=n)
    if isinstance(kind, types.LargeBinary):
        return bytes([n, 0, 255])
    if isinstance(kind, types.String):
        length = kind.length or 64
        return (f"{column.name[:3]}{n}-Ünïcode" if length >= 16 else f"v{n}")[:length]
    return f'{{"row": {n}}}'  # text columns holding JSON in this schema


def _fill(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Two rows in every table the schema has now, children pointing at their parents."""
    meta = MetaData()
    meta.reflect(engine)
    written: dict[str, list[dict[str, Any]]] = {}
    parents: dict[str, list[dict[str, Any]]] = {}
    with engine.begin() as conn:
        for table in meta.sorted_tables:
            if table.name == "alembic_version":
                continue
            seeded = conn.execute(select(func.count()).select_from(table)).scalar_one()
            rows = [{c.name: _value(c, i, i + 1 + seeded, parents) for c in table.columns} for i in (0, 1)]
            conn.execute(insert(table), rows)
            written[table.name] = parents[table.name] = rows
    return written


def _same(expected: Any, found: Any) -> bool:
    if isinstance(expected, dt.datetime) and isinstance(found, dt.datetime):
        return expected.replace(tzinfo=None) == (found.astimezone(dt.UTC).replace(tzinfo=None)
                                                 if found.tzinfo else found)
    if isinstance(expected, float | decimal.Decimal) and isinstance(found, float | decimal.Decimal):
        return float(expected) == float(found)
    return bool(expected == found)


@pytest.mark.parametrize("revision", EARLIER)
def test_upgrading_from_each_earlier_revision_keeps_every_row(database: str, revision: str) -> None:
    engine = db.make_engine(database)
    try:
        db.upgrade(engine, revision)
        written = _fill(engine)
        db.upgrade(engine)
        assert db.current_revision(engine) == db.revisions()[-1]
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            for name, rows in written.items():
                table = meta.tables[name]  # no migration drops a table (expand, then contract later)
                found = [dict(r._mapping) for r in conn.execute(select(table))]
                for row in rows:
                    match = [f for f in found if all(_same(v, f.get(k)) for k, v in row.items() if k in f)]
                    assert match, f"{name}: row {row} lost or changed by the upgrade from {revision}"
                    kept = set(row) & set(table.columns.keys())
                    assert kept == set(row), f"{name}: columns {set(row) - kept} dropped by the upgrade"
    finally:
        engine.dispose()


def _as_if_a_newer_version_upgraded(settings: Settings, *, compatible: str | None) -> None:
    """Move the index to a revision this version does not know, as a newer cloudfilm would, recording
    ``compatible`` as the oldest revision whose code still runs on it (None: no record at all)."""
    engine = db.make_engine(settings.resolved_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
            conn.execute(text("DELETE FROM schema_compat"))
            if compatible is not None:
                conn.execute(text("INSERT INTO schema_compat (name, revision) VALUES ('oldest_compatible', :r)"),
                             {"r": compatible})
    finally:
        engine.dispose()


def test_each_upgrade_records_the_oldest_revision_whose_code_runs_on_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with Archive.open(settings) as archive:
        assert db.recorded_compatible_revision(archive.engine) == db.oldest_compatible_revision()
    # the partitions migration contracts the schema (UIDs unique per partition: the upserts of older
    # ingest code name the per-UID constraints it replaces), and so does the partition lookups one
    # (older worklist code relies on accession numbers unique across the index); no other does
    script = ScriptDirectory.from_config(db._alembic_config(None))
    contracting = [r for r in db.revisions() if getattr(script.get_revision(r).module, "contract", False)]
    assert [Path(script.get_revision(r).path).stem.split("_", 1)[1] for r in contracting] == ["partitions",
                                                                                          "partition_lookups"]
    assert db.oldest_compatible_revision() == contracting[-1]


def test_an_index_a_newer_version_only_expanded_keeps_this_version_running(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with Archive.open(settings):
        pass
    _as_if_a_newer_version_upgraded(settings, compatible=db.revisions()[-1])
    with caplog.at_level("WARNING", logger="pacs.index.db"), Archive.open(settings) as archive:
        assert db.current_revision(archive.engine) == "9999"  # never migrated down
    assert "only expanded the schema" in caplog.text and "upgrade this node too" in caplog.text


@pytest.mark.parametrize("compatible", [None, "9999"], ids=["no-record", "contracted"])
def test_an_index_a_newer_version_contracted_is_refused(tmp_path: Path, compatible: str | None) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with Archive.open(settings):
        pass
    _as_if_a_newer_version_upgraded(settings, compatible=compatible)
    with pytest.raises(SettingsError, match=r"schema revision 9999, which cloudfilm .* does not know"):
        Archive.open(settings)
