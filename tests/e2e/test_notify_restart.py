"""Patient e-mails across a server crash: ``cloudfilm serve`` is killed after a message is owed
and before it went (the SMTP server is down), and once in the window where the message went but
its answer was never recorded; a real SMTP server (aiosmtpd) receives exactly one message each
time, with the link the API gave (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from pacs.accounts.patients import link_patient
from pacs.accounts.users import create_user
from pacs.events import EVENT_REPORT_SIGNED, record_event
from pacs.index import db
from pacs.jobs import write_transaction
from tests.cli import cli_env
from tests.e2e.test_webhooks_restart import PASSWORD, _stow, _token, serve
from tests.factories import PATIENTS
from tests.net import free_port
from tests.pg import temporary_database
from tests.smtp_server import mailbox

PUBLIC = "https://films.hospital.example"


def _wait(what: str, check: Callable[[], object], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _log(url: str, auth: dict[str, str]) -> list[dict[str, object]]:
    answer = httpx.get(f"{url}/api/notifications", headers=auth, timeout=30)
    assert answer.status_code == 200, answer.text
    result: list[dict[str, object]] = answer.json()
    return result


def _share(url: str, auth: dict[str, str], study: str, email: str) -> str:
    made = httpx.post(f"{url}/api/studies/{study}/shares", json={"email": email, "expires_in_days": 3},
                      headers=auth, timeout=30)  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["warnings"] == []  # CLOUDFILM_PUBLIC_URL is set
    return str(made.json()["url"])


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_each_message_arrives_once_across_crashes(backend: str, tmp_path: Path) -> None:
    smtp_port = free_port()
    with ExitStack() as stack:
        env = cli_env(CLOUDFILM_DATA_DIR=str(tmp_path / "data"), CLOUDFILM_DICOM_ENABLED="false",
                      CLOUDFILM_ADMIN_PASSWORD=PASSWORD, CLOUDFILM_PUBLIC_URL=PUBLIC,
                      CLOUDFILM_SMTP_HOST="127.0.0.1", CLOUDFILM_SMTP_PORT=str(smtp_port),
                      CLOUDFILM_SMTP_STARTTLS="false", CLOUDFILM_SMTP_FROM="Radiology <films@hospital.example>",
                      CLOUDFILM_SMTP_TIMEOUT="30", CLOUDFILM_INSTITUTION_NAME="St. Example Hospital",
                      CLOUDFILM_JOB_POLL_INTERVAL="0.2", CLOUDFILM_JOB_LEASE="3", CLOUDFILM_JOB_RETRY_BACKOFF="0.5",
                      CLOUDFILM_JOB_RETRY_BACKOFF_MAX="1", CLOUDFILM_WORKER_CONCURRENCY="1")  # fmt: skip
        if backend == "postgres":
            env["CLOUDFILM_DATABASE_URL"] = stack.enter_context(temporary_database())
        database = env.get("CLOUDFILM_DATABASE_URL") or f"sqlite:///{tmp_path / 'data' / 'index.sqlite3'}"

        # 1. Owed, not sent (the SMTP server is down), then the crash.
        with serve(env, tmp_path / "serve-1.log") as (url, proc):
            auth = _token(url)
            study = _stow(url, auth, 1, 2)  # Müller^Jürgen
            link = _share(url, auth, study, "juergen@patients.example")
            _wait("a failed attempt", lambda: (log := _log(url, auth)) and log[0]["attempts"] >= 1
                  and "could not be reached" in str(log[0]["last_error"]))  # fmt: skip
            assert _log(url, auth)[0]["status"] == "pending"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

        box = stack.enter_context(mailbox(smtp_port))
        with serve(env, tmp_path / "serve-2.log") as (url, proc):
            auth = _token(url)
            _wait("the message", lambda: box.mails())
            _wait("its record", lambda: _log(url, auth)[0]["status"] == "sent")
            time.sleep(3)  # several polls and a lease: nothing more may come
            [mail] = box.mails()
            assert re.findall(r"https://\S+", mail.text) == [link] and link.startswith(f"{PUBLIC}/s/")
            assert mail.text.startswith("Hello Jürgen,") and "Müller" not in mail.text

            # 2. A signed report (the event pacs/reports writes), and a crash after the message went,
            # before the server's answer came: in doubt, never sent again.
            engine = db.make_engine(database)
            try:
                create_user(engine, "juergen", "patient password", "patient", "", "juergen@patients.example")
                link_patient(engine, "juergen", PATIENTS[1].patient_id, PATIENTS[1].issuer or "")
                box.hold = threading.Event()
                box.arrived.clear()
                with write_transaction(engine) as conn:
                    record_event(conn, EVENT_REPORT_SIGNED, study, detail={"version": 1})
            finally:
                engine.dispose()
            assert box.arrived.wait(60), "the report's message never came"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        box.hold.set()
        assert len(box.mails()) == 2

        with serve(env, tmp_path / "serve-3.log") as (url, _proc):
            auth = _token(url)
            _wait("the in-doubt record", lambda: any(d["status"] == "unknown" for d in _log(url, auth)))
            time.sleep(3)
            log = _log(url, auth)
    mails = box.mails()
    assert len(mails) == 2, [m.message["Subject"] for m in mails]
    assert mails[1].message["Subject"] == "A report from St. Example Hospital is ready"
    assert re.findall(r"https://\S+", mails[1].text) == [f"{PUBLIC}/viewer/home"]
    assert sorted(str(d["status"]) for d in log) == ["sent", "unknown"]
    print(f"[{backend}] 2 messages, each once; the one in doubt: {[d['last_error'] for d in log][0]}")
