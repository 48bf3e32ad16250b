"""Webhooks across a server crash: ``cloudfilm serve`` is killed while it delivers to a real
receiver and started again; every event arrives, signed, in order per study, duplicates only as
at-least-once delivery allows and identified by ``X-Cloudfilm-Event-Id`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.cli import CLOUDFILM, cli_env
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.net import free_port
from tests.pg import temporary_database
from tests.webhook_receiver import Receiver, receiving

PASSWORD = "admin password 1"
BOUNDARY = "webhook-e2e"


@contextmanager
def serve(env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``cloudfilm serve`` in a process group of its own (so a crash takes its children too)."""
    port = free_port()
    env = env | {"CLOUDFILM_HTTP_PORT": str(port)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([CLOUDFILM, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "is ready" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _token(url: str) -> dict[str, str]:
    token = httpx.post(f"{url}/api/auth/token", data={"username": "admin", "password": PASSWORD}, timeout=30)
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def _stow(url: str, auth: dict[str, str], seed: int, n: int) -> str:
    datasets = make_ct_study(PATIENTS[seed % 4], n_slices=n, rows=16, cols=16, seed=seed,
                             study_uid=f"1.2.826.0.6.{seed}")  # fmt: skip
    body = b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + to_bytes(ds) + b"\r\n"
                    for ds in datasets) + f"--{BOUNDARY}--\r\n".encode()  # fmt: skip
    stored = httpx.post(f"{url}/dicomweb/studies", content=body, timeout=60, headers=auth | {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'})
    assert stored.status_code == 200, stored.text
    return str(datasets[0].StudyInstanceUID)


def _feed(url: str, auth: dict[str, str]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    while page := httpx.get(f"{url}/api/changefeed", params={"since": len(out) and out[-1]["Sequence"],
                                                             "limit": 1000}, headers=auth, timeout=30).json():
        out.extend(page)
    return out


def _wait(what: str, check: object, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_deliveries_survive_a_crash_mid_delivery(backend: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        receiver: Receiver = stack.enter_context(receiving())
        receiver.delay_s = 0.15  # a slow receiver: the crash comes while deliveries are in flight
        env = cli_env(CLOUDFILM_DATA_DIR=str(tmp_path / "data"), CLOUDFILM_DICOM_ENABLED="false",
                      CLOUDFILM_ADMIN_PASSWORD=PASSWORD, CLOUDFILM_STABLE_AGE="2", CLOUDFILM_WORKER_CONCURRENCY="2",
                      CLOUDFILM_JOB_POLL_INTERVAL="0.2", CLOUDFILM_JOB_LEASE="3", CLOUDFILM_JOB_RETRY_BACKOFF="0.5",
                      CLOUDFILM_JOB_RETRY_BACKOFF_MAX="2")  # fmt: skip
        if backend == "postgres":
            env["CLOUDFILM_DATABASE_URL"] = stack.enter_context(temporary_database())

        studies: list[str] = []
        with serve(env, tmp_path / "serve-1.log") as (url, proc):
            auth = _token(url)
            hook = httpx.post(f"{url}/api/webhooks", json={"url": receiver.url}, headers=auth, timeout=30).json()
            receiver.secret = hook["secret"]
            studies += [_stow(url, auth, seed, 6) for seed in (1, 2, 3)]
            _wait("the first deliveries", lambda: len(receiver.accepted) >= 4)
            os.killpg(proc.pid, signal.SIGKILL)  # a crash, mid-delivery
            proc.wait()
        before_crash = len(receiver.unique())
        assert before_crash < 18, "the crash came too late to test anything"

        with serve(env, tmp_path / "serve-2.log") as (url, _proc):
            auth = _token(url)
            studies.append(_stow(url, auth, 4, 3))
            # 21 creates, then a stable transition per study
            _wait("every event", lambda: len(receiver.unique()) == 25)
            feed = _feed(url, auth)
            deliveries = httpx.get(f"{url}/api/webhooks/{hook['id']}/deliveries", params={"limit": 1000},
                                   headers=auth, timeout=30).json()  # fmt: skip

    assert len(feed) == 25 and {str(e["Sequence"]) for e in feed} == set(receiver.unique())
    assert receiver.bad_signatures == 0
    order = receiver.per_study()
    assert sorted(order) == sorted(studies)
    for study, sequences in order.items():
        assert sequences == sorted(sequences), (study, sequences)  # in order; a re-send only repeats
    by_id: dict[str, list[dict[str, object]]] = {}
    for r in receiver.accepted:
        by_id.setdefault(r.event_id, []).append(r.body)
    for bodies in by_id.values():
        assert all(b == bodies[0] for b in bodies)  # a duplicate is the same event, same bytes
    duplicates = len(receiver.accepted) - len(by_id)
    assert duplicates <= 2  # at most the one in flight per lane job when the server died
    print(f"[{backend}] crash after {before_crash} of 18 events delivered; {duplicates} duplicate(s) after the restart")
    assert {d["status"] for d in deliveries} == {"delivered"} and len(deliveries) == 25
