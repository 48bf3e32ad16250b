"""Login rate limiting from the audit trail: works across processes, survives restarts.

A username with ``login_max_failures`` failed logins in the last 15 minutes, or an address with
three times as many, is refused (HTTP 429) until the window moves on. Refusals are audited as
``denied`` and do not extend the window.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from pacs.accounts.audit import Action, count_failures
from pacs.index.db import utcnow

WINDOW = timedelta(minutes=15)


def login_allowed(engine: Engine, username: str, source: str, max_failures: int) -> bool:
    since = utcnow() - WINDOW
    if count_failures(engine, Action.LOGIN, since, username=username) >= max_failures:
        return False
    return not (source and count_failures(engine, Action.LOGIN, since, source=source) >= 3 * max_failures)
