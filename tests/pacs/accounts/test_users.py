"""Users, API keys, patient links and the scope each principal gets."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from pacs.accounts.api_keys import authenticate_api_key, create_api_key, list_api_keys, revoke_api_key
from pacs.accounts.errors import InvalidAccountData
from pacs.accounts.patients import link_patient, unlink_patient
from pacs.accounts.principal import Principal, ShareGrant, may_download, scope_for
from pacs.accounts.users import (
    active_user,
    authenticate,
    create_user,
    ensure_admin,
    get_user,
    list_users,
    set_disabled,
    set_password,
)
from pacs.errors import Conflict, NotFound


def test_create_authenticate_disable(engine: Engine) -> None:
    alice = create_user(engine, "alice", "correct horse", "physician", "Alice A.")
    assert alice.role == "physician" and not alice.disabled
    assert authenticate(engine, "alice", "correct horse") is not None
    assert authenticate(engine, "alice", "wrong password") is None
    assert authenticate(engine, "nobody", "correct horse") is None
    assert get_user(engine, "alice").last_login_at is not None
    set_disabled(engine, "alice")
    assert authenticate(engine, "alice", "correct horse") is None
    assert active_user(engine, alice.id) is None
    set_disabled(engine, "alice", False)
    set_password(engine, "alice", "battery staple")
    assert authenticate(engine, "alice", "battery staple") is not None
    assert [u.username for u in list_users(engine)] == ["alice"]


def test_password_is_hashed_with_argon2(engine: Engine) -> None:
    from sqlalchemy import text

    create_user(engine, "bob", "s3cret-pass", "patient")
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT password_hash FROM users WHERE username = 'bob'")).scalar_one()
    assert stored.startswith("$argon2id$") and "s3cret-pass" not in stored


@pytest.mark.parametrize(
    ("username", "password", "role"),
    [("", "long enough", "admin"), ("bad name", "long enough", "admin"), ("ok", "short", "admin"),
     ("ok", "long enough", "superuser")],
)
def test_invalid_accounts_are_refused(engine: Engine, username: str, password: str, role: str) -> None:
    with pytest.raises(InvalidAccountData):
        create_user(engine, username, password, role)


def test_duplicate_username_conflicts(engine: Engine) -> None:
    create_user(engine, "carol", "password1", "vendor")
    with pytest.raises(Conflict):
        create_user(engine, "carol", "password2", "vendor")


def test_seed_admin_once(engine: Engine) -> None:
    seeded = ensure_admin(engine, None)
    assert seeded is not None and seeded.password and len(seeded.password) >= 16
    assert authenticate(engine, "admin", seeded.password) is not None
    assert ensure_admin(engine, "other-password") is None  # only on first start


def test_seed_admin_from_setting(engine: Engine) -> None:
    seeded = ensure_admin(engine, "from-the-environment")
    assert seeded is not None and seeded.password is None
    assert authenticate(engine, "admin", "from-the-environment") is not None


def test_api_keys(engine: Engine) -> None:
    create_user(engine, "robot", "password1", "vendor")
    info, clear = create_api_key(engine, "robot", "ci")
    assert clear.startswith("cfk_") and len(clear) > 40
    user = authenticate_api_key(engine, clear)
    assert user is not None and user.username == "robot"
    assert authenticate_api_key(engine, clear + "x") is None
    assert authenticate_api_key(engine, "not-a-key") is None
    assert list_api_keys(engine, "robot")[0].last_used_at is not None
    revoke_api_key(engine, "robot", info.id)
    assert authenticate_api_key(engine, clear) is None
    with pytest.raises(NotFound):
        revoke_api_key(engine, "robot", info.id + 100)


def test_disabled_user_api_key_stops_working(engine: Engine) -> None:
    create_user(engine, "robot", "password1", "vendor")
    _, clear = create_api_key(engine, "robot")
    set_disabled(engine, "robot")
    assert authenticate_api_key(engine, clear) is None


def test_patient_links_and_scope(engine: Engine) -> None:
    create_user(engine, "pat", "password1", "patient")
    create_user(engine, "doc", "password1", "physician")
    user = link_patient(engine, "pat", "CF-0002", "KLINIKUM-NORD")
    link_patient(engine, "pat", "CF-0002", "KLINIKUM-NORD")  # idempotent
    assert user.patient_keys == {("CF-0002", "KLINIKUM-NORD")}
    scope = scope_for(user.principal())
    assert not scope.all_studies and scope.patient_keys == {("CF-0002", "KLINIKUM-NORD")}
    assert scope.allows("1.2.3", "CF-0002", "KLINIKUM-NORD") and not scope.allows("1.2.3", "CF-0002", "")
    with pytest.raises(InvalidAccountData):
        link_patient(engine, "doc", "CF-0002")
    assert unlink_patient(engine, "pat", "CF-0002", "KLINIKUM-NORD").patient_keys == frozenset()


def test_scope_for_each_kind_of_principal() -> None:
    grant = ShareGrant(7, "1.2.3", allow_download=False)
    assert scope_for(Principal(role="admin")).all_studies
    assert scope_for(Principal(role="physician")).all_studies
    vendor = scope_for(Principal(role="vendor"))
    assert not vendor.all_studies and not vendor.study_uids and not vendor.patient_keys
    visitor = Principal(share=grant, via="share")
    assert scope_for(visitor).study_uids == {"1.2.3"}
    assert not may_download(visitor, "1.2.3", "P", "")
    assert may_download(Principal(share=ShareGrant(7, "1.2.3", True), via="share"), "1.2.3", "P", "")
    assert not may_download(Principal(share=ShareGrant(7, "1.2.3", True), via="share"), "9.9", "P", "")
    hidden = frozenset({"9.9"})
    assert scope_for(Principal(role="physician"), hidden_study_uids=hidden).hidden_study_uids == hidden
    assert not scope_for(Principal(role="admin"), hidden_study_uids=hidden).hidden_study_uids
