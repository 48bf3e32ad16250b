"""Guards for third-party internals the archive relies on: the SHA-256 of their source as installed.

Used by the tests that pin what ``pacs.dimse.overrides`` (pynetdicom), ``pacs.index.rawsql``
(SQLAlchemy) and ``pacs.storage.s3`` (minio) replace or call beyond the libraries' public API.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import Any


def resolve(path: str) -> Any:
    """The object named ``module:Qual.name`` or ``dotted.module.Qual.name`` (static lookup: a
    property's getter, a classmethod's function)."""
    if ":" in path:
        module_name, _, qualname = path.partition(":")
        target: Any = importlib.import_module(module_name)
        for name in qualname.split("."):
            target = inspect.getattr_static(target, name)
    else:
        parts = path.split(".")
        for n in range(len(parts), 0, -1):
            try:
                target = importlib.import_module(".".join(parts[:n]))
            except ImportError:
                continue
            for name in parts[n:]:
                target = inspect.getattr_static(target, name)
            break
        else:
            raise ImportError(path)
    target = getattr(target, "fget", target)
    return getattr(target, "__func__", target)


def source_sha256(path: str) -> str:
    """SHA-256 of the source of the function named by ``path`` (see :func:`resolve`)."""
    return hashlib.sha256(inspect.getsource(resolve(path)).encode()).hexdigest()
