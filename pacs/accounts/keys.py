"""The archive's secret key: signs sessions and bearer tokens and derives share-link tokens.

``CLOUDFILM_SECRET_KEY`` wins; otherwise a random key is created once in ``DATA_DIR/secret_key``
(mode 0600, created atomically so concurrent processes agree). Several servers on one database
must share the key (set it explicitly), or their sessions and share links will not match.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from pacs.errors import SettingsError
from pacs.settings import Settings

KEY_FILE = "secret_key"


def secret_key(settings: Settings) -> bytes:
    """32 bytes of key material for HMAC and JWT signing."""
    return hashlib.sha256(secret_key_text(settings).encode("utf-8")).digest()


def secret_key_text(settings: Settings) -> str:
    """The key as configured or as kept in ``DATA_DIR/secret_key`` (created there the first time)."""
    if settings.secret_key is not None:
        value = settings.secret_key.get_secret_value()
        if len(value) < 16:
            raise SettingsError("invalid setting CLOUDFILM_SECRET_KEY: use at least 16 random characters")
        return value
    return _read_or_create(settings.data_dir / KEY_FILE)


def _read_or_create(path: Path) -> str:
    try:
        return path.read_text("ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_urlsafe(48) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # fails if another process created it first: theirs wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text("ascii").strip()
