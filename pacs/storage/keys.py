"""Object keys: derived only from validated UIDs and a hex content digest.

``{study}/{series}/{sop}.{sha256[:16]}.dcm`` — a different content gets a different key, so an
overwrite never replaces bytes in place, and nothing a sender controls can shape a path.
"""

from __future__ import annotations

import re

from pacs.errors import InvalidDataset
from pacs.uids import require_uid

_KEY_RE = re.compile(r"^[0-9A-Za-z_\-]+(\.[0-9A-Za-z_\-]+)*(/[0-9A-Za-z_\-]+(\.[0-9A-Za-z_\-]+)*)*$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")


def instance_key(study_uid: str, series_uid: str, sop_uid: str, sha256_hex: str) -> str:
    """The key of one stored instance."""
    study = require_uid(study_uid, "StudyInstanceUID")
    series = require_uid(series_uid, "SeriesInstanceUID")
    sop = require_uid(sop_uid, "SOPInstanceUID")
    if not _HEX_RE.match(sha256_hex):
        raise ValueError("sha256_hex must be 64 lower-case hex digits")
    return f"{study}/{series}/{sop}.{sha256_hex[:16]}.dcm"


def check_key(key: str) -> str:
    """Reject keys that could escape a root or confuse a backend (``..``, ``//``, odd characters)."""
    if not key or len(key) > 512 or not _KEY_RE.match(key) or ".." in key:
        raise InvalidDataset(f"object key {key[:80]!r} is not allowed")
    return key
