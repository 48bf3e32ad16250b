"""A first run as a new user makes it: the start-up banner, commands run in the wrong folder, and
``make run`` reinstalling only when the dependencies changed."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.cli import cli_env, run_cli, serving
from tests.pg import postgres_available, temporary_database

REPO = Path(__file__).resolve().parents[2]


def _banner(log: Path) -> str:
    text = log.read_text()
    return text[text.rindex("\n----", 0, text.index(" is ready")) + 1:]


def test_first_start_ends_with_the_banner_and_the_second_shows_no_password(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serving(data) as (url, log):
        time.sleep(2)  # anything start-up would still print
        text = log.read_text()
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines[-1].startswith("----") and "is ready (a new archive was created by this start)" in text, text
        assert f"creating a new archive in {data.resolve()}" in text
        banner = _banner(log)
        assert f"open        {url}/" in banner and "this machine only" in banner
        # No CLOUDFILM_PUBLIC_URL on loopback: links handed out would open nowhere else (issue 13)
        assert f"links       share links, QR codes and e-mails point at {url}/, which only this machine opens" in banner
        assert "set CLOUDFILM_PUBLIC_URL" in banner
        assert f"data        {data.resolve()}" in banner
        assert re.search(r"send to AE title CLOUDFILM at 0\.0\.0\.0 port \d+ .*every network address", banner)
        assert "ANYONE who reaches this port may store" in banner
        password = re.search(r"sign in +admin +password: (\S+)", banner)
        assert password, banner
        assert "AI worker" in text[:text.index(banner)]  # the worker's line comes before, not after
        token = httpx.post(f"{url}/api/auth/token", data={"username": "admin", "password": password.group(1)})
        assert token.status_code == 200
    with serving(data) as (_url, log):
        banner = _banner(log)
        assert "new archive" not in log.read_text() and "password" not in log.read_text()
        assert "sign in     admin  (the admin account; `cloudfilm users passwd admin`" in banner


def test_banner_says_who_may_store(tmp_path: Path) -> None:
    with serving(tmp_path / "a", CLOUDFILM_DICOM_HOST="127.0.0.1", CLOUDFILM_WORKER_CONCURRENCY="0") as (_u, log):
        banner = _banner(log)
        assert "at 127.0.0.1 port" in banner and "only programs on this machine" in banner
    with serving(tmp_path / "b", CLOUDFILM_DICOM_ALLOW_UNKNOWN='["echo"]', CLOUDFILM_WORKER_CONCURRENCY="0",
                 CLOUDFILM_ADMIN_PASSWORD="from the environment") as (_u, log):
        banner = _banner(log)
        assert "nobody may store" in banner and "with CLOUDFILM_ADMIN_PASSWORD" in banner
        assert "from the environment" not in log.read_text()


def test_banner_names_no_link_problem_once_public_url_is_set(tmp_path: Path) -> None:
    with serving(tmp_path / "a", CLOUDFILM_PUBLIC_URL="https://films.hospital.example/",
                 CLOUDFILM_WORKER_CONCURRENCY="0") as (_u, log):
        banner = _banner(log)
        assert "open        https://films.hospital.example/" in banner
        assert "links " not in banner and "PUBLIC_URL" not in banner


@pytest.mark.parametrize("command", [("users", "list"), ("fsck",), ("benchmark", "list"), ("plugins", "list"),
                                     ("worker",)])
def test_commands_refuse_an_archive_that_does_not_exist(tmp_path: Path, command: tuple[str, ...]) -> None:
    result = run_cli(*command, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert f"there is no archive in {tmp_path.resolve()}/cloudfilm-data" in message
    assert "--data-dir, CLOUDFILM_DATA_DIR or --config" in message and "cloudfilm serve" in message
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_data_dir_option_points_at_an_archive(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    assert run_cli("--data-dir", str(archive), "db", "upgrade").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = run_cli("--data-dir", str(archive), "users", "list", cwd=elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert list(elsewhere.iterdir()) == []
    by_env = run_cli("users", "list", cwd=elsewhere, env={"CLOUDFILM_DATA_DIR": str(archive)})
    assert by_env.returncode == 0, by_env.stderr


@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL not running")
def test_an_empty_server_database_is_not_taken_for_an_archive(tmp_path: Path) -> None:
    with temporary_database("cloudfilm_firstrun") as url:
        refused = run_cli("users", "list", cwd=tmp_path, env={"CLOUDFILM_DATABASE_URL": url})
        assert refused.returncode == 2 and "holds no cloudfilm index" in refused.stderr, refused.stderr
        assert run_cli("db", "upgrade", env={"CLOUDFILM_DATABASE_URL": url}).returncode == 0
        listed = run_cli("users", "list", cwd=tmp_path, env={"CLOUDFILM_DATABASE_URL": url})
        assert listed.returncode == 0, listed.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_run_installs_only_when_pyproject_changes(tmp_path: Path) -> None:
    """The Makefile's stamps, on a copy with a stand-in virtual environment (nothing is installed)."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()

    def dry_run(target: str) -> str:
        return subprocess.run(["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, check=True,
                              env=cli_env()).stdout

    assert "pip install" in dry_run("run")  # never installed
    (tmp_path / ".venv" / ".installed").touch()
    assert "pip install" not in dry_run("run") and "cloudfilm serve" in dry_run("run")
    assert "pip install" in dry_run("test")  # the dev extras are not installed yet
    time.sleep(1.1)
    (tmp_path / "pyproject.toml").touch()  # the dependencies changed
    assert "pip install" in dry_run("run")


@pytest.mark.parametrize("npm", ["fetches", "missing", "user-set"])
def test_make_run_adds_the_pinned_ohif(tmp_path: Path, npm: str) -> None:
    """``make run`` hands ``serve`` the OHIF build ``scripts/fetch_ohif.sh`` fetched (or the one the user
    set); without npm it says so and serves anyway. Stand-ins for the script and ``cloudfilm``."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    (tmp_path / ".venv" / ".installed").touch()
    fake = tmp_path / ".venv" / "bin" / "cloudfilm"
    fake.write_text('#!/bin/sh\necho "serve with OHIF=[$CLOUDFILM_OHIF_DIR] CODECS=[$CLOUDFILM_CODECS_DIR] args=$*"\n')
    fake.chmod(0o755)
    (tmp_path / "scripts").mkdir()
    fetched = "/cache/cloudfilm/ohif-pinned/dist"
    (tmp_path / "scripts" / "fetch_ohif.sh").write_text(
        f'echo "{fetched}"\n' if npm == "fetches" else 'echo "fetch_ohif: npm is not installed" >&2\nexit 1\n')
    codecs = "/cache/cloudfilm/codecs-1/dist"  # the viewer's decoders (scripts/fetch_codecs.sh), the same way
    (tmp_path / "scripts" / "fetch_codecs.sh").write_text(
        f'echo "{codecs}"\n' if npm == "fetches" else 'echo "fetch_codecs: npm is not installed" >&2\nexit 1\n')
    env = cli_env() | ({"CLOUDFILM_OHIF_DIR": "/opt/my-ohif", "CLOUDFILM_CODECS_DIR": "/opt/my-codecs"}
                       if npm == "user-set" else {})
    run = subprocess.run(["make", "run"], cwd=tmp_path, capture_output=True, text=True, check=False, env=env)
    assert run.returncode == 0, run.stderr
    expected = {"fetches": fetched, "missing": "", "user-set": "/opt/my-ohif"}[npm]
    expected_codecs = {"fetches": codecs, "missing": "", "user-set": "/opt/my-codecs"}[npm]
    assert f"serve with OHIF=[{expected}] CODECS=[{expected_codecs}] args=serve" in run.stdout, run.stdout
    assert ("the OHIF viewer is not added (it needs npm" in run.stdout) == (npm == "missing")
    assert ("the viewer's image decoders are not added (they need npm)" in run.stdout) == (npm == "missing")


def test_banner_says_where_ohif_is(tmp_path: Path) -> None:
    dist = tmp_path / "ohif-dist"
    dist.mkdir()
    (dist / "index.html").write_text("<html></html>")
    codecs = tmp_path / "codecs-dist"  # the viewer's decoders (scripts/fetch_codecs.sh writes VERSIONS last)
    codecs.mkdir()
    (codecs / "VERSIONS").write_text("pinned\n")
    with serving(tmp_path / "data", CLOUDFILM_OHIF_DIR=str(dist), CLOUDFILM_CODECS_DIR=str(codecs)) as (url, log):
        assert f"OHIF        {url}/ohif/" in _banner(log)
        assert f"decoders    {url}/codecs/" in _banner(log)
    with serving(tmp_path / "data") as (_url, log):
        assert "OHIF        not installed: `make run` adds it when npm is here" in _banner(log)
        assert "decoders    not installed: compressed frames show as rendered JPEG" in _banner(log)
