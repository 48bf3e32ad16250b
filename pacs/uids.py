"""UID validation (PS3.5 9.1): only digits and dots, components without leading zeros, at most 64 chars.

Keys in the object store are built only from validated UIDs and hex digests, so nothing a sender
controls can shape a path.
"""

from __future__ import annotations

import re
import uuid

from pacs.errors import InvalidDataset

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
# Real-world UIDs sometimes carry a leading zero in a component; we accept those for storage
# (they are harmless in a path: still digits and dots) but reject anything else.
_LENIENT_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_UID_LENGTH = 64


def is_valid_uid(value: object, *, strict: bool = False) -> bool:
    """True when ``value`` is a UID string of digits and dots, 1..64 characters."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_UID_LENGTH:
        return False
    return bool((_UID_RE if strict else _LENIENT_UID_RE).match(value))


def require_uid(value: object, name: str) -> str:
    """Return ``value`` as a clean UID or raise :class:`InvalidDataset` naming the attribute."""
    if value is None or value == "":
        raise InvalidDataset(f"{name} is missing")
    text = str(value).rstrip("\x00 ")
    if not is_valid_uid(text):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InvalidDataset(f"{name} {shown!r} is not a valid UID (digits and dots, at most 64 characters)")
    return text


_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://cloudfilm.invalid/pacs")


def derived_uid(*parts: object) -> str:
    """A deterministic "2.25." UID (PS3.5 B.2) from ``parts``: the same series for every version of a document."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, chr(31).join(str(p) for p in parts)).int}"
