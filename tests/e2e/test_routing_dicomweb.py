"""Routing to a second cloudfilm over STOW-RS with a bearer token: the destination is down for a
while (its server stopped) and comes back on the same port; every matching instance arrives once
(no update in its change feed) and byte-identical (its stored objects are the sender's bytes)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import select

from pacs.archive import Archive
from pacs.events import Action, read_feed
from pacs.index.models import Instance
from pacs.routing.models import RoutingForward
from pacs.routing.status import destination_states
from pacs.settings import Settings
from tests.ai_plugins.test_forward_jobs import _cursor, _study, working
from tests.ai_plugins.test_worker import wait_until
from tests.cli import CLOUDFILM, cli_env
from tests.jobsupport import DB_BACKENDS, db_settings
from tests.net import free_port

PASSWORD = "destination admin 1"


@contextmanager
def serve(data_dir: Path, port: int, log: Path) -> Iterator[str]:
    env = cli_env(CLOUDFILM_DATA_DIR=str(data_dir), CLOUDFILM_DICOM_ENABLED="false", CLOUDFILM_HTTP_PORT=str(port),
                  CLOUDFILM_ADMIN_PASSWORD=PASSWORD, CLOUDFILM_TOKEN_MINUTES="120",
                  CLOUDFILM_WORKER_CONCURRENCY="0")  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen([CLOUDFILM, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while log.read_text(errors="replace").count("is ready") < _starts.get(log, 0) + 1:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        _starts[log] = _starts.get(log, 0) + 1
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


_starts: dict[Path, int] = {}


def _forwards(archive: Archive) -> list[str]:
    with archive.engine.connect() as conn:
        return list(conn.execute(select(RoutingForward.status).order_by(RoutingForward.id)).scalars())


@pytest.mark.parametrize("backend", [DB_BACKENDS[0], pytest.param(DB_BACKENDS[1], marks=pytest.mark.postgres)])
def test_a_second_cloudfilm_down_for_a_while_gets_everything_once(backend: str, tmp_path: Path) -> None:
    port = free_port()
    dest_dir, log = tmp_path / "dest", tmp_path / "dest.log"
    with serve(dest_dir, port, log) as url:  # once, for a token; then it is down
        token = httpx.post(f"{url}/api/auth/token", data={"username": "admin", "password": PASSWORD}, timeout=30)
        assert token.status_code == 200, token.text
    routing = {"routing_destinations": {"cloud2": {"kind": "dicomweb", "url": f"http://127.0.0.1:{port}/dicomweb",
                                                   "token": token.json()["access_token"], "timeout": 10,
                                                   "max_attempts": 1000}},
               "routing_rules": [{"name": "mr-and-ct", "to": ["cloud2"], "match": {"Modality": ["CT", "MR"]}}]}
    with db_settings(backend, tmp_path / "source", stable_age=1.0, job_poll_interval=0.1, job_retry_backoff=0.2,
                     job_retry_backoff_max=0.5, **routing) as settings, Archive.open(settings) as archive:  # fmt: skip
        sent: dict[str, bytes] = {}
        with working(archive):
            wait_until("the rule's cursor", lambda: _cursor(archive))
            for data in _study(11, 4):
                assert archive.ingest.store_bytes(data).ok
                sent[str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)] = data
            wait_until("failed attempts", lambda: "could not be reached" in
                       destination_states(archive.engine, settings.routing_destinations)[0].last_error,
                       timeout=60)  # fmt: skip
            with serve(dest_dir, port, log):
                wait_until("every forward sent", lambda: _forwards(archive) == ["sent"] * 4, timeout=120)
            state = destination_states(archive.engine, settings.routing_destinations)[0]
            assert (state.pending, state.sent, state.dead, state.last_status_code) == (0, 4, 0, None)

    received = Archive.open(Settings(data_dir=dest_dir), migrate=False)
    try:
        feed = read_feed(received.engine)
        assert [e.action for e in feed] == [Action.CREATE] * 4  # nothing sent twice: no update, no refusal
        with received.engine.connect() as conn:
            keys = dict(conn.execute(select(Instance.sop_uid, Instance.object_key)).all())
        assert set(keys) == set(sent)
        for sop, data in sent.items():
            assert received.store.get_bytes(keys[sop]) == data
    finally:
        received.close()


def test_a_wrong_token_is_a_failure_with_the_http_status(tmp_path: Path) -> None:
    port = free_port()
    dest_dir, log = tmp_path / "dest", tmp_path / "dest.log"
    routing = {"routing_destinations": {"cloud2": {"kind": "dicomweb", "url": f"http://127.0.0.1:{port}/dicomweb",
                                                   "token": "not-a-token", "max_attempts": 2}},
               "routing_rules": [{"name": "all", "to": ["cloud2"]}]}
    with db_settings("sqlite", tmp_path / "source", job_poll_interval=0.1, job_retry_backoff=0.2,
                     job_retry_backoff_max=0.5, **routing) as settings, Archive.open(settings) as archive:  # fmt: skip
        with serve(dest_dir, port, log), working(archive):
            wait_until("the rule's cursor", lambda: _cursor(archive))
            assert archive.ingest.store_bytes(_study(12, 1)[0]).ok
            wait_until("the dead letter", lambda: _forwards(archive) == ["dead"], timeout=60)
        state = destination_states(archive.engine, settings.routing_destinations)[0]
        assert state.last_status_code == 401 and "answered 401" in state.last_error
