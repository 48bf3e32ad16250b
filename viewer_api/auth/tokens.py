"""Signed tokens (JWT, HS256): bearer access tokens, the browser session and the share session.

Every token carries ``typ`` so one kind can never be replayed as another, and an expiry. The
session and share cookies also carry a random CSRF value that pages echo in ``X-CSRF-Token``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import jwt

from pacs.index.db import utcnow

ALGORITHM = "HS256"
TokenType = Literal["access", "session", "share"]


@dataclass(frozen=True, slots=True)
class Claims:
    typ: TokenType
    subject: int  # user id, or share id for "share"
    expires: datetime
    csrf: str = ""


class TokenSigner:
    """Issues and checks the archive's tokens with one secret key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, typ: TokenType, subject: int, lifetime: timedelta, *, not_after: datetime | None = None,
              extra: dict[str, Any] | None = None) -> tuple[str, Claims]:
        now = utcnow()
        expires = now + lifetime
        if not_after is not None and not_after < expires:
            expires = not_after
        csrf = secrets.token_urlsafe(24) if typ != "access" else ""
        payload: dict[str, Any] = {"typ": typ, "sub": str(subject), "iat": int(now.timestamp()),
                                   "exp": int(expires.timestamp()), "jti": secrets.token_hex(8)}
        if csrf:
            payload["csrf"] = csrf
        payload.update(extra or {})
        return jwt.encode(payload, self._key, algorithm=ALGORITHM), Claims(typ, subject, expires, csrf)

    def check(self, token: str, typ: TokenType) -> Claims | None:
        """The claims of a valid, unexpired token of kind ``typ``; ``None`` otherwise."""
        try:
            payload = jwt.decode(token, self._key, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "typ"]})
        except jwt.PyJWTError:
            return None
        if payload.get("typ") != typ:
            return None
        try:
            subject = int(payload["sub"])
        except (TypeError, ValueError):
            return None
        expires = datetime.fromtimestamp(int(payload["exp"]), tz=utcnow().tzinfo)
        return Claims(typ, subject, expires, str(payload.get("csrf", "")))
