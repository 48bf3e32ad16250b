"""Errors of the accounts layer; entry points map them to HTTP statuses like the others."""

from __future__ import annotations

from datetime import datetime

from pacs.errors import CloudfilmError


class InvalidAccountData(CloudfilmError):
    """A username, password, PIN, role or share option breaks a rule (HTTP 400)."""


class Forbidden(CloudfilmError):
    """The caller is known but its role may not do this (HTTP 403)."""


class Locked(CloudfilmError):
    """Too many wrong secrets: the share link or login is locked for a while (HTTP 429)."""

    def __init__(self, message: str, until: datetime) -> None:
        super().__init__(message)
        self.until = until
