"""Job tokens: what a vendor-hosted plugin gets to read one study and store results into it.

A job token is a JWT (HS256, the archive's secret key, ``typ`` = ``plugin-job``) naming one study,
the job and the plugin, valid for the job's timeout plus a little. It maps to
``AccessScope.studies(uid)`` for reads, and to one write: STOW-RS to ``/dicomweb/studies/{uid}``,
where the archive refuses any instance of another study (PS3.18 10.5.1). Its ``typ`` differs from the
accounts layer's ``access``/``session``/``share`` tokens, so it can never be replayed as one.

This module uses only the standard library, PyJWT and :mod:`pacs`, so the accounts layer can
verify these tokens wherever it authenticates bearer credentials.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from pacs.access import AccessScope
from pacs.index.db import utcnow

JOB_TOKEN_TYPE = "plugin-job"
ALGORITHM = "HS256"
_STUDY_PATH = re.compile(r"^/dicomweb/studies/(?P<uid>[0-9.]+)(?:/.*)?$")
_STOW_PATH = re.compile(r"^/dicomweb/studies/(?P<uid>[0-9.]+)/?$")


@dataclass(frozen=True, slots=True)
class JobGrant:
    """What a valid job token allows: reading one study and storing instances into it."""

    study_uid: str
    job_id: int
    plugin: str  # name@version
    expires: datetime

    def scope(self) -> AccessScope:
        """The studies the holder may see: exactly one."""
        return AccessScope.studies(self.study_uid)

    def may_store(self, study_uid: str) -> bool:
        """Whether an instance of ``study_uid`` may be stored with this token."""
        return study_uid == self.study_uid

    def allows_request(self, method: str, path: str) -> bool:
        """Whether the holder may send ``method path`` at all (reads of the study, STOW-RS)."""
        method = method.upper()
        if method in ("GET", "HEAD"):
            m = _STUDY_PATH.match(path)
            return m is not None and m.group("uid") == self.study_uid
        if method == "POST":
            m = _STOW_PATH.match(path)
            return m is not None and m.group("uid") == self.study_uid
        return False


def issue_job_token(key: bytes, *, study_uid: str, job_id: int, plugin: str,
                    lifetime: timedelta) -> tuple[str, JobGrant]:  # fmt: skip
    """Sign a token for one job."""
    now = utcnow()
    expires = now + lifetime
    payload: dict[str, Any] = {
        "typ": JOB_TOKEN_TYPE, "sub": f"job:{job_id}", "study": study_uid, "plugin": plugin, "job": job_id,
        "iat": int(now.timestamp()), "exp": int(expires.timestamp()), "jti": secrets.token_hex(8),
    }  # fmt: skip
    token = jwt.encode(payload, key, algorithm=ALGORITHM)
    return token, JobGrant(study_uid, job_id, plugin, datetime.fromtimestamp(int(expires.timestamp()), tz=UTC))


def check_job_token(key: bytes, token: str) -> JobGrant | None:
    """The grant of a valid, unexpired job token; ``None`` for anything else (other token kinds too)."""
    try:
        payload = jwt.decode(token, key, algorithms=[ALGORITHM],
                             options={"require": ["exp", "typ", "study", "job"]})  # fmt: skip
    except jwt.PyJWTError:
        return None
    if payload.get("typ") != JOB_TOKEN_TYPE:
        return None
    study, job = payload.get("study"), payload.get("job")
    if not isinstance(study, str) or not isinstance(job, int):
        return None
    expires = datetime.fromtimestamp(int(payload["exp"]), tz=UTC)
    return JobGrant(study, job, str(payload.get("plugin", "")), expires)
