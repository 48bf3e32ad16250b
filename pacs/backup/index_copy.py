"""The index half of a backup: a consistent snapshot while the archive runs, and its restore.

SQLite is copied with its online backup API (one read transaction: writers go on in WAL mode);
PostgreSQL with ``pg_dump`` on a snapshot exported from the transaction that also lists the
objects, so the object list and the dump are the same instant. A restore writes the snapshot into
an empty index of the same kind natively (file copy, ``pg_restore``), or copies an SQLite
snapshot into PostgreSQL table by table (the path a growing site takes); PostgreSQL into SQLite
is refused.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import URL, Connection, Engine, Integer, MetaData, Table, delete, insert, make_url, select, text
from sqlalchemy.exc import SQLAlchemyError

from pacs.backup.manifest import ObjectEntry, sync_dir
from pacs.errors import SettingsError, StorageUnavailable
from pacs.index import db
from pacs.storage.references import index_tables, referenced_sql

_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class Snapshot:
    kind: str  # "sqlite" | "postgresql"
    revision: str
    objects: list[ObjectEntry]


def index_kind(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise SettingsError(f"backups support SQLite and PostgreSQL indexes, not {backend}")
    return backend


# --- snapshot -------------------------------------------------------------------------------------


def snapshot(engine: Engine, target: Path) -> Snapshot:
    """Write the index as it is now to ``target`` and list the objects that snapshot names: its
    instances and the other objects it names (:mod:`pacs.storage.references`: uploaded packages)."""
    kind = index_kind(engine.url.render_as_string(hide_password=False))
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    result = _sqlite_snapshot(engine, tmp) if kind == "sqlite" else _pg_snapshot(engine, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    sync_dir(target.parent)
    return result


def _sqlite_snapshot(engine: Engine, tmp: Path) -> Snapshot:
    source = engine.url.database
    if not source or source == ":memory:":
        raise SettingsError("an in-memory index cannot be backed up")
    with closing(sqlite3.connect(source, timeout=30)) as src, closing(sqlite3.connect(tmp)) as dst:
        src.backup(dst)  # one step: a consistent copy, writers wait only for the page copy
    with closing(sqlite3.connect(f"file:{tmp}?mode=ro", uri=True)) as snap:
        revision = snap.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = {name for (name,) in snap.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        objects = [ObjectEntry(k, int(s), h) for k, s, h in snap.execute(referenced_sql(tables))]
    if revision is None:
        raise SettingsError("the index has no schema revision; run `cloudfilm db upgrade` first")
    return Snapshot("sqlite", revision[0], objects)


def _pg_snapshot(engine: Engine, tmp: Path) -> Snapshot:
    _require_tool("pg_dump")
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            snapshot_id = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            query = text(referenced_sql(index_tables(conn)))
            objects = [ObjectEntry(k, int(s), h) for k, s, h in conn.execute(query)]
            _run_pg_tool(["pg_dump", "--format=custom", "--no-owner", "--no-privileges",
                          f"--snapshot={snapshot_id}", f"--file={tmp}"], engine.url)  # fmt: skip
    return Snapshot("postgresql", revision, objects)


# --- restore --------------------------------------------------------------------------------------


def restore_index(kind: str, source: Path, revision: str, target_url: str) -> None:
    """Write the snapshot ``source`` (of ``kind``, at ``revision``) into the empty index at ``target_url``."""
    target_kind = index_kind(target_url)
    if kind == "postgresql" and target_kind == "sqlite":
        raise SettingsError("a PostgreSQL backup restores into PostgreSQL only; point CLOUDFILM_DATABASE_URL "
                            "at an empty PostgreSQL database")
    if target_kind == "sqlite":
        path = Path(make_url(target_url).database or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".restoring")
        shutil.copyfile(source, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        sync_dir(path.parent)
        return
    engine = db.make_engine(target_url)
    try:
        if kind == "postgresql":
            _require_tool("pg_restore")
            _run_pg_tool(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
                          "--single-transaction", f"--dbname={_dbname(engine.url)}", str(source)], engine.url)
        else:
            db.upgrade(engine, revision)  # the snapshot's schema, then its rows
            try:
                _copy_tables(source, engine)
            except SQLAlchemyError as exc:
                raise StorageUnavailable(f"cannot copy the index into the target: {str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()


def _copy_tables(sqlite_file: Path, target: Engine) -> None:
    """Every row of the SQLite snapshot into the same tables of ``target``, parents before children,
    then each id sequence moved past the copied ids."""
    source = db.make_engine(f"sqlite:///{sqlite_file}")
    try:
        src_meta, dst_meta = MetaData(), MetaData()
        src_meta.reflect(source)
        dst_meta.reflect(target)
        with source.connect() as src, target.begin() as dst:
            dst.execute(text("SET TIME ZONE 'UTC'"))  # the snapshot's times are UTC without a zone
            tables = [t for t in dst_meta.sorted_tables if t.name != "alembic_version"]
            for table in reversed(tables):  # rows the migrations seeded: the snapshot has its own
                dst.execute(delete(table))
            for table in dst_meta.sorted_tables:
                if table.name == "alembic_version" or table.name not in src_meta.tables:
                    continue
                _copy_rows(src, src_meta.tables[table.name], dst, table)
            for table in dst_meta.sorted_tables:
                for column in table.primary_key.columns:
                    if isinstance(column.type, Integer):  # no sequence behind it: setval(NULL, ...) is NULL
                        dst.execute(text("SELECT setval(pg_get_serial_sequence(:t, :c), "
                                         f"COALESCE((SELECT MAX({column.name}) FROM {table.name}), 1), "
                                         f"(SELECT MAX({column.name}) FROM {table.name}) IS NOT NULL)"),
                                    {"t": table.name, "c": column.name})  # fmt: skip
    finally:
        source.dispose()


def _copy_rows(src: Connection, src_table: Table, dst: Connection, dst_table: Table) -> None:
    names = [c.name for c in dst_table.columns if c.name in src_table.columns]
    order = list(src_table.primary_key.columns) or [src_table.columns[names[0]]]
    result = src.execute(select(*(src_table.columns[n] for n in names)).order_by(*order))
    while batch := result.fetchmany(_BATCH):
        dst.execute(insert(dst_table), [dict(zip(names, row, strict=True)) for row in batch])


# --- PostgreSQL client tools ----------------------------------------------------------------------


def _require_tool(name: str) -> None:
    if shutil.which(name) is None:
        raise SettingsError(f"{name} is not installed; install the PostgreSQL client tools "
                            "(Debian: postgresql-client) of the server's major version or newer")


def _dbname(url: URL) -> str:
    return url.database or "postgres"


@contextmanager
def _pg_env(url: URL) -> Iterator[dict[str, str]]:
    """The connection in libpq's variables: the password never appears in a command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for var, value in (("PGHOST", url.host), ("PGPORT", url.port), ("PGUSER", url.username),
                       ("PGPASSWORD", url.password), ("PGDATABASE", url.database)):
        if value is not None:
            env[var] = str(value)
    if "sslmode" in url.query:
        env["PGSSLMODE"] = str(url.query["sslmode"])
    yield env


def _run_pg_tool(argv: list[str], url: URL) -> None:
    if argv[0] == "pg_dump":
        argv = [*argv, _dbname(url)]
    with _pg_env(url) as env:
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=24 * 3600)
        except OSError as exc:
            raise StorageUnavailable(f"{argv[0]} could not run: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise StorageUnavailable(f"{argv[0]} failed: {detail}")
