"""``cloudfilm users …`` and what ``cloudfilm serve`` does about accounts, run as a user would."""

from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
from click.testing import Result
from typer.testing import CliRunner

from pacs.accounts.audit import AuditQuery, query
from pacs.accounts.users import authenticate, get_user
from pacs.archive import Archive
from pacs.settings import Settings
from tests.cli import run_cli, serving


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"CLOUDFILM_DATA_DIR": str(tmp_path / "data"), **extra}


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    """A ``cloudfilm`` command in-process (the console script's Typer app), with a clean environment."""
    from viewer_api.cli import app

    clean = {k: None for k in os.environ if k.startswith("CLOUDFILM_")}
    return CliRunner().invoke(app, list(args), env=clean | env, input=stdin)  # type: ignore[arg-type]


def test_users_add_list_disable_link(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert _cli(env, "db", "upgrade").exit_code == 0  # users are added to an archive that exists
    added = _cli(env, "users", "add", "alice", "--role", "physician", "--generate")
    assert added.exit_code == 0, added.output
    password = re.search(r"password: (\S+)", added.stdout).group(1)  # type: ignore[union-attr]
    piped = _cli(env, "users", "add", "pat", "--role", "patient", "--password-stdin", stdin="a long enough password\n")
    assert piped.exit_code == 0, piped.output
    assert _cli(env, "users", "link-patient", "pat", "CF-0002", "--issuer", "KLINIKUM-NORD").exit_code == 0
    assert _cli(env, "users", "disable", "alice").exit_code == 0
    listed = _cli(env, "users", "list")
    assert listed.exit_code == 0
    assert re.search(r"alice\s.*physician.*disabled", listed.stdout)
    assert re.search(r"pat\s.*patient.*active.*CF-0002", listed.stdout)
    key = _cli(env, "users", "api-key", "pat", "--name", "phone")
    assert key.exit_code == 0 and key.stdout.strip().startswith("cfk_")
    refused = run_cli("users", "add", "bob", "--role", "root", "--generate", env=env)  # as a user runs it
    assert refused.returncode == 1 and "role must be one of" in refused.stderr
    duplicate = _cli(env, "users", "add", "pat", "--generate")
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    with Archive.open(Settings(data_dir=tmp_path / "data"), migrate=False) as archive:
        assert authenticate(archive.engine, "alice", password) is None  # disabled
        assert authenticate(archive.engine, "pat", "a long enough password") is not None
        trail = query(archive.engine, AuditQuery(newest_first=False))
        assert [e.source for e in trail] == ["cli"] * len(trail) and len(trail) == 5


def _serving(tmp_path: Path, **extra: str) -> AbstractContextManager[tuple[str, Path]]:
    return serving(tmp_path / "data", CLOUDFILM_DICOM_ENABLED="false", CLOUDFILM_WORKER_CONCURRENCY="0", **extra)


def test_first_serve_creates_admin_with_a_password_printed_once(tmp_path: Path) -> None:
    with _serving(tmp_path) as (url, log):
        printed = re.search(r"sign in +admin +password: (\S+)", log.read_text())
        assert printed, log.read_text()
        token = httpx.post(f"{url}/api/auth/token", data={"username": "admin", "password": printed.group(1)})
        assert token.status_code == 200
        assert httpx.get(f"{url}/dicomweb/studies").status_code == 401
    with _serving(tmp_path) as (_url, log):
        assert "password" not in log.read_text()


def test_admin_password_setting_seeds_admin(tmp_path: Path) -> None:
    with _serving(tmp_path, CLOUDFILM_ADMIN_PASSWORD="seeded-from-env") as (url, log):
        assert "seeded-from-env" not in log.read_text() and "password:" not in log.read_text()
        token = httpx.post(f"{url}/api/auth/token", data={"username": "admin", "password": "seeded-from-env"})
        assert token.status_code == 200


def test_serve_refuses_a_public_address_without_authentication(tmp_path: Path) -> None:
    refused = run_cli("serve", env=_env(tmp_path, CLOUDFILM_AUTH_DISABLED="true", CLOUDFILM_HTTP_HOST="0.0.0.0"))
    assert refused.returncode == 2 and "refusing to listen on 0.0.0.0" in refused.stderr


def test_users_email_for_report_notices(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert _cli(env, "db", "upgrade").exit_code == 0
    added = _cli(env, "users", "add", "pat", "--role", "patient", "--email", "pat@patients.example", "--generate")
    assert added.exit_code == 0, added.output
    bad = _cli(env, "users", "email", "pat", "not an address")
    assert bad.exit_code == 1 and "is not an e-mail address" in bad.output
    assert _cli(env, "users", "email", "pat", "new@patients.example").exit_code == 0
    with Archive.open(Settings(data_dir=tmp_path / "data"), migrate=False) as archive:
        assert get_user(archive.engine, "pat").email == "new@patients.example"
    cleared = _cli(env, "users", "email", "pat", "")
    assert cleared.exit_code == 0 and "cleared the e-mail address of pat" in cleared.stdout
    with Archive.open(Settings(data_dir=tmp_path / "data"), migrate=False) as archive:
        assert get_user(archive.engine, "pat").email is None
        details = [e.detail for e in query(archive.engine, AuditQuery(newest_first=False))]
        assert "e-mail address cleared" in details and not any("@" in d for d in details)  # no address in the trail
