"""Share links: tokens, expiry, revocation, PIN lockout, view counter and claiming by birth date."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from pacs.accounts.errors import InvalidAccountData
from pacs.accounts.shares import (
    MAX_TRIES,
    Check,
    ShareStatus,
    active_grant,
    check_pin,
    claim_study,
    create_share,
    find_share,
    get_share,
    list_shares,
    record_view,
    revoke_share,
)
from pacs.accounts.users import create_user, get_user
from pacs.errors import NotFound
from pacs.index.db import utcnow
from tests.factories import PATIENTS
from tests.pacs.accounts.conftest import KEY


def test_create_find_and_revoke(engine: Engine, study_uid: str) -> None:
    doc = create_user(engine, "doc", "password1", "physician")
    share = create_share(engine, KEY, study_uid, created_by=doc.id, expires_in_days=30, max_days=365)
    assert share.token and len(share.token) >= 22  # >= 128 bits, base64url
    assert share.status() is ShareStatus.ACTIVE and share.created_by == "doc"
    assert share.expires_at - utcnow() > timedelta(days=29)
    found = find_share(engine, share.token)
    assert found is not None and found.id == share.id and found.token is None
    assert find_share(engine, share.token[:-1] + ("A" if share.token[-1] != "A" else "B")) is None
    assert active_grant(engine, share.id) is not None
    # the token is never stored, only its digest; the owner can still be shown it again
    with engine.connect() as conn:
        stored = " ".join(str(v) for v in conn.execute(text("SELECT * FROM shares")).one())
    assert share.token not in stored
    assert list_shares(engine, KEY, study_uid)[0].token == share.token
    revoked = revoke_share(engine, study_uid, share.id)
    assert revoked.status() is ShareStatus.REVOKED
    assert active_grant(engine, share.id) is None
    with pytest.raises(NotFound):
        revoke_share(engine, "1.2.3", share.id)  # wrong study


def test_options_are_validated(engine: Engine, study_uid: str) -> None:
    with pytest.raises(InvalidAccountData):
        create_share(engine, KEY, study_uid, created_by=None, expires_in_days=400, max_days=365)
    with pytest.raises(InvalidAccountData):
        create_share(engine, KEY, study_uid, created_by=None, expires_in_days=0, max_days=365)
    with pytest.raises(InvalidAccountData):
        create_share(engine, KEY, study_uid, created_by=None, expires_in_days=3, max_days=365, pin="12a4")
    with pytest.raises(NotFound):
        create_share(engine, KEY, "1.2.3.4", created_by=None, expires_in_days=3, max_days=365)


def test_expired_share(engine: Engine, study_uid: str) -> None:
    share = create_share(engine, KEY, study_uid, created_by=None, expires_in_days=1, max_days=365)
    with engine.begin() as conn:
        conn.execute(text("UPDATE shares SET expires_at = :t"), {"t": utcnow() - timedelta(seconds=1)})
    assert get_share(engine, None, study_uid, share.id).status() is ShareStatus.EXPIRED
    assert active_grant(engine, share.id) is None


def test_pin_locks_after_five_wrong_tries(engine: Engine, study_uid: str) -> None:
    share = create_share(engine, KEY, study_uid, created_by=None, expires_in_days=3, max_days=365, pin="2468")
    assert share.has_pin
    with engine.connect() as conn:
        assert "2468" not in str(conn.execute(text("SELECT pin_hash FROM shares")).scalar_one())
    for left in range(MAX_TRIES - 1, 0, -1):
        result = check_pin(engine, share.id, "0000")
        assert result.result is Check.WRONG and result.tries_left == left
    locked = check_pin(engine, share.id, "0000")
    assert locked.result is Check.LOCKED and locked.locked_until is not None
    assert locked.locked_until - utcnow() > timedelta(minutes=14)
    assert check_pin(engine, share.id, "2468").result is Check.LOCKED  # even the right PIN, while locked
    with engine.begin() as conn:
        conn.execute(text("UPDATE shares SET locked_until = :t"), {"t": utcnow() - timedelta(seconds=1)})
    assert check_pin(engine, share.id, "2468").result is Check.OK
    assert check_pin(engine, share.id, "0000").tries_left == MAX_TRIES - 1  # counter was reset


def test_view_counter(engine: Engine, study_uid: str) -> None:
    share = create_share(engine, KEY, study_uid, created_by=None, expires_in_days=3, max_days=365)
    record_view(engine, share.id)
    record_view(engine, share.id)
    info = get_share(engine, KEY, study_uid, share.id)
    assert info.views == 2 and info.last_viewed_at is not None


def test_patient_claims_study_by_birth_date(engine: Engine, study_uid: str) -> None:
    create_user(engine, "pat", "password1", "patient")
    share = create_share(engine, KEY, study_uid, created_by=None, expires_in_days=3, max_days=365)
    assert claim_study(engine, share.id, "pat", "1900-01-01").result is Check.WRONG
    assert get_user(engine, "pat").patient_keys == frozenset()
    birth = PATIENTS[1].birth_date
    assert claim_study(engine, share.id, "pat", f"{birth[:4]}-{birth[4:6]}-{birth[6:]}").result is Check.OK
    assert get_user(engine, "pat").patient_keys == {(PATIENTS[1].patient_id, "KLINIKUM-NORD")}
    with pytest.raises(InvalidAccountData):
        claim_study(engine, share.id, "pat", "yesterday")
