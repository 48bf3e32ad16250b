"""Every object the index names: instances, and the non-instance objects kept under reserved prefixes.

``cloudfilm fsck`` takes an object no row names for an orphan (and ``--repair`` deletes it); a
backup copies exactly the objects the index names. Both ask here, so an object the index names is
neither deleted nor left out of a backup, whichever part of cloudfilm wrote it.

Non-instance objects live under a reserved key prefix that no instance key can start with (instance
keys start with a UID, which is digits and dots): ``_probe/`` (readiness probe, never indexed) and
``_packages/<sha256>`` (uploaded algorithm packages, ``ai_plugins.packages``) and ``_versions/…`` (the
objects corrected instances had before, ``pacs.corrections``). Instances moved to a retention tier
live under ``_tiers/<tier>/`` and are instances still.

The ``plugin_packages`` table belongs to ``ai_plugins.packages`` (migration ``0008``), a layer above
pacs: pacs may not import it, so it is named here in SQL. A registry that ``ai_plugins`` filled at
import time was the other way; it was not taken because a process that never imported
``ai_plugins`` (a pacs-only script running ``fsck --repair``) would then take every uploaded package
for an orphan and delete it. A table that an index at an older schema revision lacks is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, inspect, text

#: Uploaded algorithm package files: ``_packages/<sha256 of the file>``.
PACKAGE_PREFIX = "_packages/"


@dataclass(frozen=True, slots=True)
class ObjectReference:
    """One kind of indexed object: ``sql`` selects ``(object_key, size, sha256)`` from ``table``;
    ``lookup`` selects a row when the object ``:key`` is named by it."""

    table: str
    sql: str
    lookup: str


INSTANCES = ObjectReference("instances", "SELECT object_key, size_bytes, sha256 FROM instances",
                            "SELECT 1 FROM instances WHERE object_key = :key")  # fmt: skip
PACKAGES = ObjectReference("plugin_packages",
                           f"SELECT '{PACKAGE_PREFIX}' || digest, size, digest FROM plugin_packages",
                           f"SELECT 1 FROM plugin_packages WHERE '{PACKAGE_PREFIX}' || digest = :key")  # fmt: skip
#: Earlier versions of corrected instances (``pacs.corrections``): ``_versions/…``.
VERSIONS = ObjectReference("instance_versions", "SELECT object_key, size_bytes, sha256 FROM instance_versions",
                           "SELECT 1 FROM instance_versions WHERE object_key = :key")  # fmt: skip
REFERENCES: tuple[ObjectReference, ...] = (INSTANCES, PACKAGES, VERSIONS)


#: Instances moved to a retention tier: ``_tiers/<tier>/<the instance's key>`` (``pacs.storage.tiers``).
TIER_PREFIX = "_tiers/"


def is_instance_key(key: str) -> bool:
    """Whether ``key`` is an instance's (a UID's digit first, or in a retention tier) rather than a
    reserved-prefix object's."""
    return not key.startswith("_") or key.startswith(TIER_PREFIX)


def package_key(digest: str) -> str:
    """The object key of the package file whose SHA-256 is ``digest`` (64 lower-case hex digits)."""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("a package digest is 64 lower-case hex digits")
    return PACKAGE_PREFIX + digest


def referenced_sql(tables: set[str]) -> str:
    """One query for every object the index names, ordered by key, over the tables that exist."""
    parts = [ref.sql for ref in REFERENCES if ref.table in tables]
    return " UNION ALL ".join(parts) + " ORDER BY 1"


def index_tables(conn: Connection) -> set[str]:
    """The tables of the index ``conn`` is connected to (an older schema revision lacks some)."""
    return set(inspect(conn).get_table_names())


def is_referenced(conn: Connection, key: str, tables: set[str]) -> bool:
    """Whether the index as ``conn`` sees it now names the object ``key``."""
    return any(conn.execute(text(ref.lookup), {"key": key}).first() is not None
               for ref in REFERENCES if ref.table in tables)  # fmt: skip
