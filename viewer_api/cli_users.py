"""``cloudfilm users …``: accounts from the command line (add, list, disable, link-patient, keys).

Every change is written to the audit trail with source ``cli``. Passwords are prompted for (hidden,
twice), read from stdin with ``--password-stdin``, or generated with ``--generate`` and printed once.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Table

from pacs.accounts.api_keys import create_api_key
from pacs.accounts.audit import Action, AuditEvent, record
from pacs.accounts.models import ROLES
from pacs.accounts.patients import link_patient, unlink_patient
from pacs.accounts.users import (
    SeededAdmin,
    create_user,
    ensure_admin,
    list_users,
    set_disabled,
    set_email,
    set_password,
)
from pacs.archive import Archive
from pacs.cli import app, console, open_archive_or_exit, out, settings_or_exit
from pacs.errors import CloudfilmError

users_app = typer.Typer(help="User accounts: add, list, disable, link patients, API keys.", no_args_is_help=True)
app.add_typer(users_app, name="users")


@contextmanager
def _archive() -> Iterator[Archive]:
    archive = open_archive_or_exit(settings_or_exit())
    try:
        yield archive
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()


def _audit(archive: Archive, username: str, detail: str, action: Action = Action.USER_CHANGE) -> None:
    record(archive.engine, AuditEvent(action, username=username, source="cli", detail=detail))


def _password(password_stdin: bool, generate: bool) -> tuple[str, bool]:
    if generate:
        return secrets.token_urlsafe(15), True
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n"), False
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True)), False


@users_app.command("add")
def add(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option("--role", "-r", help=f"One of: {', '.join(ROLES)}.")] = "physician",
    name: Annotated[str, typer.Option("--name", help="Full name shown in pages.")] = "",
    email: Annotated[str, typer.Option("--email", help="A patient's address for report notices.")] = "",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    generate: Annotated[bool, typer.Option("--generate", help="Generate a password and print it once.")] = False,
    partition: Annotated[str, typer.Option("--partition", help="The hospital (a [partitions.<name>] table) the "
                                           "account belongs to.")] = "default",
) -> None:
    """Create an account."""
    password, generated = _password(password_stdin, generate)
    with _archive() as archive:
        found = archive.partitions.by_slug(partition)
        if found is None:
            raise CloudfilmError(f"there is no partition {partition!r}: configure [partitions.{partition}] first")
        user = create_user(archive.engine, username, password, role, name, email or None, found.id)
        _audit(archive, user.username, f"added {user.role} account"
               + ("" if found.slug == "default" else f" in partition {found.slug}"))
    out.print(f"added {user.role} {user.username}", highlight=False)
    if generated:
        out.print(f"password: {password}", highlight=False)


@users_app.command("list")
def list_cmd() -> None:
    """List accounts with their role, state and linked patients."""
    with _archive() as archive:
        users = list_users(archive.engine)
    table = Table("username", "role", "state", "created", "last login", "patients")
    for u in users:
        table.add_row(u.username, u.role, "disabled" if u.disabled else "active", f"{u.created_at:%Y-%m-%d}",
                      f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "-",
                      ", ".join(f"{p}" + (f" ({i})" if i else "") for p, i in sorted(u.patient_keys)))
    out.print(table)


@users_app.command("disable")
def disable(username: Annotated[str, typer.Argument()]) -> None:
    """Disable an account: its sessions, tokens and API keys stop working at once."""
    with _archive() as archive:
        set_disabled(archive.engine, username, True)
        _audit(archive, username, "disabled")
    out.print(f"disabled {username}", highlight=False)


@users_app.command("enable")
def enable(username: Annotated[str, typer.Argument()]) -> None:
    """Enable a disabled account again."""
    with _archive() as archive:
        set_disabled(archive.engine, username, False)
        _audit(archive, username, "enabled")
    out.print(f"enabled {username}", highlight=False)


@users_app.command("passwd")
def passwd(
    username: Annotated[str, typer.Argument()],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    generate: Annotated[bool, typer.Option("--generate", help="Generate a password and print it once.")] = False,
) -> None:
    """Set an account's password."""
    password, generated = _password(password_stdin, generate)
    with _archive() as archive:
        set_password(archive.engine, username, password)
        _audit(archive, username, "password changed")
    out.print(f"password of {username} changed", highlight=False)
    if generated:
        out.print(f"password: {password}", highlight=False)


@users_app.command("link-patient")
def link(
    username: Annotated[str, typer.Argument(help="A patient account.")],
    patient_id: Annotated[str, typer.Argument(help="PatientID (0010,0020).")],
    issuer: Annotated[str, typer.Option("--issuer", help="IssuerOfPatientID (0010,0021).")] = "",
    unlink: Annotated[bool, typer.Option("--unlink", help="Remove the link instead.")] = False,
) -> None:
    """Give a patient account the studies of a PatientID (+ issuer)."""
    with _archive() as archive:
        if unlink:
            unlink_patient(archive.engine, username, patient_id, issuer)
        else:
            link_patient(archive.engine, username, patient_id, issuer)
        what = f"{patient_id}" + (f" ({issuer})" if issuer else "")
        _audit(archive, username, f"{'unlinked' if unlink else 'linked'} patient {what}")
    out.print(f"{'unlinked' if unlink else 'linked'} {username} {'from' if unlink else 'to'} {what}", highlight=False)


@users_app.command("email")
def email_cmd(
    username: Annotated[str, typer.Argument()],
    address: Annotated[str, typer.Argument(help="E-mail address; \"\" clears it.")],
) -> None:
    """Set the address a patient is e-mailed at when a report of theirs is signed."""
    with _archive() as archive:
        set_email(archive.engine, username, address or None)
        _audit(archive, username, "e-mail address set" if address else "e-mail address cleared")
    out.print(f"{'set' if address else 'cleared'} the e-mail address of {username}", highlight=False)


@users_app.command("api-key")
def api_key(
    username: Annotated[str, typer.Argument()],
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "",
) -> None:
    """Create an API key for an account and print it once (use it as ``Authorization: Bearer <key>``)."""
    with _archive() as archive:
        info, clear = create_api_key(archive.engine, username, name)
        _audit(archive, username, f"created API key {info.id}", Action.API_KEY)
    out.print(clear, highlight=False)


def seed_admin(archive: Archive) -> SeededAdmin | None:
    """First start: create ``admin`` from CLOUDFILM_ADMIN_PASSWORD, or with a random password that the
    start-up banner prints once (never logged)."""
    secret = archive.settings.admin_password
    seeded = ensure_admin(archive.engine, secret.get_secret_value() if secret else None)
    if seeded is not None:
        _audit(archive, seeded.username, "seeded the first admin account")
    return seeded
