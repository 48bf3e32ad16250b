"""Core statements compiled once per dialect and run on the DBAPI cursor of a SQLAlchemy connection.

The ingest path runs eight small statements per committed instance. SQLAlchemy's execution
machinery (execution context, parameter processing, result objects) cost ~55 us per statement on
the 2-core machine, more than SQLite's own work; here the SQL text, the parameter order and the
bind processors (e.g. SQLite's datetime format) are taken from SQLAlchemy's compiler once, and each
execution is one DBAPI call. Transactions stay SQLAlchemy's (``with conn.begin()``), DBAPI errors
are wrapped as SQLAlchemy's (``OperationalError``...), as ``Connection.execute`` would.

This mirrors private parts of SQLAlchemy (how ``DefaultExecutionContext._init_compiled`` orders and
processes parameters, how ``Connection._handle_dbapi_exception`` wraps errors and drops dead
connections): ``pyproject.toml`` pins the minor version, and ``tests/pacs/test_rawsql.py`` fails
when the source of those parts changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

from pacs import metrics


class RawStatement:
    """One statement for one dialect. Inserts and updates are compiled for exactly the
    ``column_keys`` they are executed with: every value must be given (no Python-side defaults)."""

    def __init__(self, stmt: ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None = None) -> None:
        compiled: Any = stmt.compile(dialect=dialect, column_keys=list(column_keys) if column_keys else None)
        if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
            raise ValueError("the statement needs Python-side column defaults: give every column a value")
        if compiled.literal_execute_params or compiled.post_compile_params or compiled.escaped_bind_names:
            # SQLAlchemy rewrites such statements at each execution; this path sends them as compiled.
            raise ValueError("the statement has expanding, literal or escaped parameters: run it through SQLAlchemy")
        self.sql: str = compiled.string
        self._names: tuple[str, ...] | None = tuple(compiled.positiontup) if compiled.positiontup else None
        self._processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._processors[name] = processor
        self._dialect = dialect
        self._error: type[Exception] = dialect.loaded_dbapi.Error

    def bound(self, name: str, value: Any) -> Any:
        """``value`` as it is sent to the database for parameter ``name``."""
        processor = self._processors.get(name)
        return processor(value) if processor is not None else value

    def _params(self, values: Mapping[str, Any]) -> Any:
        processors = self._processors
        if self._names is not None:
            return tuple(processors[n](values[n]) if n in processors else values[n] for n in self._names)
        return {k: processors[k](v) if k in processors else v for k, v in values.items()}

    def execute(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        """Run with ``values``; the DBAPI cursor, to fetch from."""
        return self._run(conn, lambda cursor, params: cursor.execute(self.sql, params), self._params(values))

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        self._run(conn, lambda cursor, params: cursor.executemany(self.sql, params),
                  [self._params(row) for row in rows]).close()

    def _run(self, conn: Connection, call: Callable[[Any, Any], Any], params: Any) -> Any:
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        cursor = dbapi_conn.cursor()
        started = time.perf_counter()
        try:
            call(cursor, params)
        except self._error as exc:
            metrics.DATABASE_ERRORS.inc()
            if self._dialect.is_disconnect(cast(Any, exc), dbapi_conn, cursor):
                conn.invalidate(exc)  # as SQLAlchemy does: the pool drops the dead connection
            else:
                cursor.close()
            raise DBAPIError.instance(self.sql, params, exc, self._error) from exc
        finally:
            metrics.DATABASE_SECONDS.observe(time.perf_counter() - started)
        return cursor

    def scalar(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        """The first column of the first row, None without a row."""
        row = self.one_or_none(conn, values)
        return None if row is None else row[0]

    def one_or_none(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        cursor = self.execute(conn, values)
        try:
            return cursor.fetchone()
        finally:
            cursor.close()

    def all(self, conn: Connection, values: Mapping[str, Any]) -> list[Any]:
        cursor = self.execute(conn, values)
        try:
            return list(cursor.fetchall())
        finally:
            cursor.close()
