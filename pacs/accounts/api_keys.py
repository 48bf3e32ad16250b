"""Long-lived, revocable API keys for machines (scripts, OHIF deployments, AI vendors).

A key is ``cfk_`` + 256 random bits, shown once; only its SHA-256 digest is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, select

from pacs.accounts.hashing import digest, new_token
from pacs.accounts.models import ApiKey, User
from pacs.accounts.tx import aware, aware_or_none, reading, writing
from pacs.accounts.users import UserInfo, user_info, user_row
from pacs.errors import NotFound
from pacs.index.db import utcnow

PREFIX = "cfk_"
_TOUCH_EVERY = timedelta(minutes=5)  # last_used_at is refreshed at most this often


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: int
    username: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _key_info(key: ApiKey, username: str) -> ApiKeyInfo:
    return ApiKeyInfo(key.id, username, key.name, aware(key.created_at), aware_or_none(key.last_used_at),
                      aware_or_none(key.revoked_at))


def create_api_key(engine: Engine, username: str, name: str = "") -> tuple[ApiKeyInfo, str]:
    """A new key for ``username``: its description and the clear key (never retrievable again)."""
    clear = new_token(PREFIX)
    with writing(engine) as session:
        user = user_row(session, username)
        key = ApiKey(user_fk=user.id, name=name[:64], key_hash=digest(clear), created_at=utcnow())
        session.add(key)
        session.flush()
        return _key_info(key, user.username), clear


def list_api_keys(engine: Engine, username: str) -> list[ApiKeyInfo]:
    with reading(engine) as session:
        user = user_row(session, username)
        keys = session.scalars(select(ApiKey).where(ApiKey.user_fk == user.id).order_by(ApiKey.id))
        return [_key_info(k, user.username) for k in keys]


def revoke_api_key(engine: Engine, username: str, key_id: int) -> ApiKeyInfo:
    with writing(engine) as session:
        user = user_row(session, username)
        key = session.get(ApiKey, key_id)
        if key is None or key.user_fk != user.id:
            raise NotFound("there is no such API key")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
        return _key_info(key, user.username)


def authenticate_api_key(engine: Engine, clear: str) -> UserInfo | None:
    """The enabled account owning this unrevoked key, or ``None``."""
    if not clear.startswith(PREFIX):
        return None
    with reading(engine) as session:
        row = session.execute(
            select(ApiKey, User).join(User, User.id == ApiKey.user_fk).where(ApiKey.key_hash == digest(clear))
        ).first()
        if row is None:
            return None
        key, user = row
        if key.revoked_at is not None or user.disabled:
            return None
        info = user_info(session, user)
        stale = key.last_used_at is None or utcnow() - aware(key.last_used_at) > _TOUCH_EVERY
        key_id = key.id
    if stale:
        with writing(engine) as session:
            fresh = session.get(ApiKey, key_id)
            if fresh is not None:
                fresh.last_used_at = utcnow()
    return info


def find_owner(engine: Engine, key_id: int) -> str:
    with reading(engine) as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            raise NotFound("there is no such API key")
        user = session.get(User, key.user_fk)
        return user.username if user else ""
