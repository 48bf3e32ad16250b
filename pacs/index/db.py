"""Database engine, sessions and schema migration (Alembic, applied on start and by ``db upgrade``)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pacs import metrics
from pacs.errors import SettingsError, StorageUnavailable

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine tuned for the archive: WAL + full sync on SQLite; pre-ping for server databases
    (an SQLite file cannot drop a pooled connection, and the ping cost a query per checkout)."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": parsed.get_backend_name() != "sqlite", "future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
        kwargs["pool_timeout"] = 10
        if parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": 5}
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    event.listen(engine, "before_cursor_execute", _statement_started)
    event.listen(engine, "after_cursor_execute", _statement_done)
    event.listen(engine, "handle_error", _statement_failed)
    return engine


def _statement_started(conn: Any, *_: Any) -> None:
    conn.info.setdefault("cloudfilm_started", []).append(time.perf_counter())


def _statement_done(conn: Any, *_: Any) -> None:
    started = conn.info.get("cloudfilm_started")
    if started:
        metrics.DATABASE_SECONDS.observe(time.perf_counter() - started.pop())


def _statement_failed(context: Any) -> None:
    metrics.DATABASE_ERRORS.inc()
    conn = context.connection
    if conn is not None and conn.info.get("cloudfilm_started"):
        conn.info["cloudfilm_started"].pop()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy issue BEGIN itself so that writes take the lock up front (no upgrade deadlocks).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # an acknowledged commit survives power loss
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def ping(engine: Engine) -> None:
    """Raise StorageUnavailable unless the database answers."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise StorageUnavailable("the index database is unreachable") from exc


def _alembic_config(engine: Engine | None) -> Any:
    from alembic.config import Config

    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None))


def revisions() -> list[str]:
    """Every schema revision this version knows, oldest first."""
    return [r.revision for r in reversed(list(_script().walk_revisions()))]


#: The row of ``schema_compat`` (migration 0011) naming the oldest revision whose code runs on the index.
_COMPAT_ROW = "oldest_compatible"


def oldest_compatible_revision() -> str:
    """The oldest schema revision whose code still runs against an index at this version's newest.

    Migrations expand (add tables, nullable columns, indexes), and code of any earlier revision runs
    against what they leave. A migration that contracts (drops or rewrites what older code reads)
    says so with a module attribute ``contract = True``, and from it on only code that knows it runs."""
    known = revisions()
    script = _script()
    contracting = [rev for rev in known if getattr(script.get_revision(rev).module, "contract", False)]
    return contracting[-1] if contracting else known[0]


def recorded_compatible_revision(engine: Engine) -> str | None:
    """What the newest upgrade recorded as :func:`oldest_compatible_revision`; None before 0011."""
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("schema_compat"):
                return None
            row = conn.execute(text("SELECT revision FROM schema_compat WHERE name = :n"), {"n": _COMPAT_ROW})
            return row.scalar_one_or_none()
    except SQLAlchemyError as exc:
        raise StorageUnavailable(f"cannot read the index database: {str(exc).splitlines()[0]}") from exc


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every pending migration (idempotent) and record the oldest revision whose code still
    runs on the result.

    An index a newer version upgraded is never migrated down. This version keeps running against it
    when the newer one only expanded the schema (a rolling upgrade: the newer node recorded that
    code as old as this one still runs on it), and otherwise stops with a sentence."""
    from alembic import command

    current = current_revision(engine)
    known = revisions()
    if current is not None and current not in known:
        from pacs import __version__

        compatible = recorded_compatible_revision(engine)
        if compatible is not None and compatible in known:
            log.warning("the index is at schema revision %s, newer than this cloudfilm %s knows (its newest is "
                        "%s); the newer version only expanded the schema since %s, so this one keeps running "
                        "on it (a rolling upgrade): upgrade this node too", current, __version__, known[-1],
                        compatible)
            return
        why = ("a newer cloudfilm upgraded it" if compatible is None else
               f"a newer cloudfilm upgraded it and changed the schema in a way only code of revision "
               f"{compatible} or newer runs on")
        raise SettingsError(f"the index is at schema revision {current}, which cloudfilm {__version__} does not "
                            f"know (its newest is {known[-1]}): {why}. Run that version, or restore a backup "
                            "made before the upgrade; schema downgrades are not supported")
    cfg = _alembic_config(engine)
    try:
        with engine.connect() as conn, _foreign_keys_off(conn), conn.begin():
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            compatible = oldest_compatible_revision()
            recorded = conn.execute(text("SELECT revision FROM schema_compat WHERE name = :n"),
                                    {"n": _COMPAT_ROW}).scalar_one_or_none() if revision == "head" else compatible
            if recorded != compatible:  # written once per upgrade: a start with nothing to do writes nothing
                conn.execute(text("INSERT INTO schema_compat (name, revision) VALUES (:n, :r) ON CONFLICT "
                                  "(name) DO UPDATE SET revision = excluded.revision"),
                             {"n": _COMPAT_ROW, "r": compatible})
            if is_sqlite(engine) and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                raise StorageUnavailable("the migration left rows whose parent row is missing; nothing was "
                                         "changed")
    except SQLAlchemyError as exc:
        raise StorageUnavailable(f"cannot migrate the index database: {str(exc).splitlines()[0]}") from exc


@contextlib.contextmanager
def _foreign_keys_off(conn: Any) -> Iterator[None]:
    """On SQLite, foreign keys off while migrating: a table rebuild drops the old table, and with them on
    that drop would delete the child rows of every cascading foreign key (SQLite's "making other kinds of
    table schema changes" procedure). The pragma only works outside a transaction, hence the raw connection."""
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.driver_connection
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise StorageUnavailable(f"cannot read the index database: {str(exc).splitlines()[0]}") from exc
