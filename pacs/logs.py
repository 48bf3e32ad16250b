"""Log lines an on-call engineer can follow: each carries the ID of the operation it belongs to (an
HTTP request, a DICOM association, a job), and ``CLOUDFILM_LOG_FORMAT=json`` writes one JSON object
per line for a log collector.

The IDs live in a context variable: bound where an operation starts (``with bound(request="…")``)
and seen by every log call below it in the same thread or task.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_CONTEXT: ContextVar[dict[str, str]] = ContextVar("cloudfilm_log_context", default={})  # noqa: B039 - replaced, never mutated
_PROCESS: dict[str, str] = {}  # this process's name among several writing one log stream


def name_process(name: str) -> None:
    """Tag every line this process logs with ``process=name`` (a supervised ``serve`` process)."""
    _PROCESS["process"] = name


@contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Add ``fields`` (e.g. ``request``, ``association``, ``job``) to every log line logged inside."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: str(v) for k, v in fields.items()}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current() -> dict[str, str]:
    """The fields bound here now."""
    return dict(_CONTEXT.get())


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.context = {**_PROCESS, **_CONTEXT.get()} if _PROCESS else _CONTEXT.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the bound IDs, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        entry.update(getattr(record, "context", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The plain format, with the bound IDs in brackets after the logger's name."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        context = getattr(record, "context", {})
        record.ids = " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]" if context else ""
        return super().format(record)


def configure(level: str, fmt: str) -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` or ``json``); replaces earlier handlers."""
    handler = logging.StreamHandler()
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
