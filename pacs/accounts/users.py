"""User accounts: create, list, disable, change password, authenticate, seed the first admin."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from pacs.accounts.errors import InvalidAccountData
from pacs.accounts.hashing import hash_secret, needs_rehash, verify_secret
from pacs.accounts.models import ROLES, PatientLink, User
from pacs.accounts.principal import Principal, Role
from pacs.accounts.tx import aware, aware_or_none, reading, writing
from pacs.errors import Conflict, NotFound
from pacs.index.db import utcnow
from pacs.notify.addresses import check_email

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
ADMIN_USERNAME = "admin"


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    username: str
    role: Role
    full_name: str
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None
    patient_keys: frozenset[tuple[str, str]]
    email: str | None = None
    partition: int = 1  # pacs.partitions: the hospital the account belongs to

    def principal(self, via: str = "session") -> Principal:
        return Principal(user_id=self.id, username=self.username, role=self.role,
                         patient_keys=self.patient_keys, via=via, partition=self.partition)  # type: ignore[arg-type]


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise InvalidAccountData(f"role must be one of {', '.join(ROLES)}")
    return cast(Role, role)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidAccountData(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise InvalidAccountData("a password may have at most 1024 characters")


def user_info(session: Session, user: User) -> UserInfo:
    keys = frozenset(
        (pid, issuer)
        for pid, issuer in session.execute(
            select(PatientLink.patient_id, PatientLink.issuer).where(PatientLink.user_fk == user.id)
        )
    )
    return UserInfo(user.id, user.username, check_role(user.role), user.full_name, user.disabled,
                    aware(user.created_at), aware_or_none(user.last_login_at), keys, user.email, user.partition_fk)


def user_row(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise NotFound(f"there is no user {username!r}")
    return user


def create_user(engine: Engine, username: str, password: str, role: str, full_name: str = "",
                email: str | None = None, partition: int = 1) -> UserInfo:  # fmt: skip
    """A new enabled account of ``partition``; :class:`Conflict` when the name is taken (names are
    unique across partitions, so that signing in needs no partition)."""
    if not _USERNAME.match(username):
        raise InvalidAccountData("a username is 1 to 64 letters, digits, '.', '_', '@' or '-'")
    check_password(password)
    checked = check_role(role)
    address = check_email(email) if email else None
    with writing(engine) as session:
        if session.scalars(select(User.id).where(User.username == username)).first() is not None:
            raise Conflict(f"the user {username!r} already exists")
        user = User(username=username, password_hash=hash_secret(password), role=checked,
                    full_name=full_name[:128], email=address, disabled=False, created_at=utcnow(),
                    partition_fk=partition)
        session.add(user)
        session.flush()
        return user_info(session, user)


def list_users(engine: Engine) -> list[UserInfo]:
    with reading(engine) as session:
        return [user_info(session, u) for u in session.scalars(select(User).order_by(User.username))]


def get_user(engine: Engine, username: str) -> UserInfo:
    with reading(engine) as session:
        return user_info(session, user_row(session, username))


def active_user(engine: Engine, user_id: int) -> UserInfo | None:
    """The enabled account with this id (for validating tokens and sessions on each request)."""
    with reading(engine) as session:
        user = session.get(User, user_id)
        if user is None or user.disabled:
            return None
        return user_info(session, user)


def set_disabled(engine: Engine, username: str, disabled: bool = True) -> UserInfo:
    """Disable (or re-enable) an account; its sessions, tokens and API keys stop working at once."""
    with writing(engine) as session:
        user = user_row(session, username)
        user.disabled = disabled
        return user_info(session, user)


def set_email(engine: Engine, username: str, email: str | None) -> UserInfo:
    """Set (or, with ``None`` or "", clear) the address a patient is told of signed reports at."""
    address = check_email(email) if email else None
    with writing(engine) as session:
        user = user_row(session, username)
        user.email = address
        return user_info(session, user)


def set_password(engine: Engine, username: str, password: str) -> None:
    check_password(password)
    with writing(engine) as session:
        user_row(session, username).password_hash = hash_secret(password)


def authenticate(engine: Engine, username: str, password: str) -> UserInfo | None:
    """The enabled account for these credentials, or ``None`` (constant work whether or not it exists)."""
    with reading(engine) as session:
        user = session.scalars(select(User).where(User.username == username)).first()
        stored = user.password_hash if user is not None else None
        if not verify_secret(stored, password) or user is None or user.disabled:
            return None
        user_id = user.id
    with writing(engine) as session:
        row = session.get(User, user_id)
        if row is None:
            return None
        row.last_login_at = utcnow()
        if needs_rehash(row.password_hash):
            row.password_hash = hash_secret(password)
        return user_info(session, row)


@dataclass(frozen=True, slots=True)
class SeededAdmin:
    username: str
    password: str | None  # set only when generated: the caller prints it once


def ensure_admin(engine: Engine, password: str | None) -> SeededAdmin | None:
    """On first start (no admin account yet) create ``admin``; with no password given, a random one."""
    with reading(engine) as session:
        has_admin = session.scalar(select(func.count()).select_from(User).where(User.role == "admin"))
        if has_admin:
            return None
    generated = None if password else secrets.token_urlsafe(15)
    try:
        create_user(engine, ADMIN_USERNAME, password or cast(str, generated), "admin", "Administrator")
    except Conflict:
        return None  # another process won the race
    return SeededAdmin(ADMIN_USERNAME, generated)
