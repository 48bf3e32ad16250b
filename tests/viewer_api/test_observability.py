"""Logs and metrics for on-call: each metric on /metrics moves when its event happens (scraped before
and after), and JSON log lines carry the request, association or job they belong to."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import build_context
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ai_plugins.runner.handler import Done, JobFailed, Lease
from ai_plugins.runner.worker import Worker
from pacs import logs
from pacs.jobs import ClaimedJob, JobSpec, enqueue, write_transaction
from pacs.settings import Settings
from tests.factories import make_ct_study, to_bytes
from tests.pacs.dimse.support import Node, dicom_settings, running

REPO = Path(__file__).resolve().parents[2]
KIND = "metrics-test"
BOUNDARY = "cloudfilm-metrics-test"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Node, TestClient]]:
    settings = dicom_settings(Settings(data_dir=tmp_path / "data", auth_disabled=True, worker_concurrency=0))
    with running(settings) as running_node:
        yield running_node, TestClient(create_app_for(running_node))


def create_app_for(node: Node) -> Any:
    from viewer_api.app import create_app

    return create_app(node.archive)


def _value(client: TestClient, name: str, **labels: str) -> float:
    scraped = client.get("/metrics")
    assert scraped.status_code == 200
    total = 0.0
    for family in text_string_to_metric_families(scraped.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _stow(client: TestClient, parts: list[bytes], **headers: str) -> int:
    body = b"".join(b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                    for p in parts) + b"--" + BOUNDARY.encode() + b"--\r\n"
    response = client.post("/dicomweb/studies", content=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}', **headers})
    return response.status_code


class _Handler:
    kinds = (KIND,)

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def execute(self, job: ClaimedJob, lease: Lease) -> Done:
        logging.getLogger("tests.observability").info("handling the test job")
        if self.fail:
            raise JobFailed("the test handler fails")
        return Done({"ok": True})

    def housekeep(self) -> bool:
        return False


def _run_job(node: Node, key: str, *, fail: bool) -> None:
    with write_transaction(node.archive.engine) as conn:
        enqueue(conn, JobSpec(kind=KIND, dedupe_key=key, target="probe", target_version="1"))
    worker = Worker(node.archive, concurrency=0, kinds=[KIND], use_entry_points=False, handlers=[_Handler(fail)])
    [job] = worker.queue.claim("test-worker", [KIND])
    worker.execute(job)


def test_each_metric_moves_when_its_event_happens(node: tuple[Node, TestClient]) -> None:
    dicom, client = node
    study = make_ct_study(n_slices=3, rows=16, cols=16, seed=7300)

    # C-STORE and associations
    stored = _value(client, "cloudfilm_store_requests_total", route="c-store", status="0x0000")
    timed = _value(client, "cloudfilm_store_request_seconds_count", route="c-store")
    admitted = _value(client, "cloudfilm_dimse_associations_total", result="admitted")
    active = _value(client, "cloudfilm_dimse_associations_active")
    assoc = dicom.associate([build_context(CTImageStorage)])
    assert assoc.is_established
    assert _value(client, "cloudfilm_dimse_associations_active") == active + 1
    assert assoc.send_c_store(study[0]).Status == 0
    assoc.release()
    deadline = time.monotonic() + 10
    while _value(client, "cloudfilm_dimse_associations_active") != active:
        assert time.monotonic() < deadline, "the association's slot was never given back"
        time.sleep(0.05)
    assert _value(client, "cloudfilm_store_requests_total", route="c-store", status="0x0000") == stored + 1
    assert _value(client, "cloudfilm_store_request_seconds_count", route="c-store") == timed + 1
    assert _value(client, "cloudfilm_dimse_associations_total", result="admitted") == admitted + 1

    # STOW-RS, and the database statements it runs
    ok, refused = (_value(client, "cloudfilm_store_requests_total", route="stow-rs", status=s) for s in ("200", "409"))
    statements = _value(client, "cloudfilm_database_statement_seconds_count")
    assert _stow(client, [to_bytes(study[1])]) == 200
    assert _stow(client, [b"not DICOM at all"]) == 409
    assert _value(client, "cloudfilm_store_requests_total", route="stow-rs", status="200") == ok + 1
    assert _value(client, "cloudfilm_store_requests_total", route="stow-rs", status="409") == refused + 1
    assert _value(client, "cloudfilm_database_statement_seconds_count") > statements

    # object store reads and failures
    ds = study[0]
    params = {"requestType": "WADO", "studyUID": ds.StudyInstanceUID, "seriesUID": ds.SeriesInstanceUID,
              "objectUID": ds.SOPInstanceUID, "contentType": "application/dicom"}
    reads, failures = (_value(client, n, op="get") for n in ("cloudfilm_object_store_seconds_count",
                                                             "cloudfilm_object_store_errors_total"))
    assert client.get("/wado", params=params).status_code == 200
    assert _value(client, "cloudfilm_object_store_seconds_count", op="get") > reads
    [key] = [o.key for o in dicom.archive.store.list(str(ds.StudyInstanceUID)) if str(ds.SOPInstanceUID) in o.key]
    path = dicom.archive.store.root / key  # type: ignore[attr-defined]
    path.unlink()
    path.mkdir()  # the disk answers, but not with the object
    assert client.get("/wado", params=params).status_code == 503
    assert _value(client, "cloudfilm_object_store_errors_total", op="get") == failures + 1

    # database failures
    errors = _value(client, "cloudfilm_database_errors_total")
    with pytest.raises(SQLAlchemyError), dicom.archive.engine.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    assert _value(client, "cloudfilm_database_errors_total") == errors + 1

    # the job queue and job attempts
    with write_transaction(dicom.archive.engine) as conn:
        enqueue(conn, JobSpec(kind=KIND, dedupe_key="waiting", target="probe", target_version="1"))
    assert _value(client, "cloudfilm_jobs", kind=KIND, status="queued") == 1
    assert _value(client, "cloudfilm_job_oldest_due_seconds", kind=KIND) >= 0
    succeeded = _value(client, "cloudfilm_job_attempts_total", kind=KIND, plugin="probe@1", outcome="succeeded")
    retrying = _value(client, "cloudfilm_job_attempts_total", kind=KIND, plugin="probe@1", outcome="retrying")
    durations = _value(client, "cloudfilm_job_seconds_count", kind=KIND, plugin="probe@1")
    _run_job(dicom, "waiting", fail=False)
    _run_job(dicom, "failing", fail=True)
    assert _value(client, "cloudfilm_job_attempts_total", kind=KIND, plugin="probe@1",
                  outcome="succeeded") == succeeded + 1
    assert _value(client, "cloudfilm_job_attempts_total", kind=KIND, plugin="probe@1",
                  outcome="retrying") == retrying + 1
    assert _value(client, "cloudfilm_job_seconds_count", kind=KIND, plugin="probe@1") == durations + 2
    assert _value(client, "cloudfilm_jobs", kind=KIND, status="retrying") == 1

    # free disk space
    assert _value(client, "cloudfilm_disk_free_bytes", path="data") > 0
    assert _value(client, "cloudfilm_disk_free_bytes", path="objects") > 0


@contextmanager
def _logging_as(fmt: str) -> Iterator[None]:
    """The archive's log configuration in ``fmt`` for the block; pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure("INFO", fmt)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def test_json_log_lines_name_their_request_association_and_job(node: tuple[Node, TestClient],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    dicom, client = node
    ds = make_ct_study(n_slices=1, rows=16, cols=16, seed=7400)[0]
    with _logging_as("json"):
        assert _stow(client, [b"not DICOM at all"], **{"X-Request-ID": "req-7400"}) == 409
        short = ds.copy()
        short.PixelData = ds.PixelData[:100]
        assoc = dicom.associate([build_context(CTImageStorage)])
        assert assoc.send_c_store(short).Status == 0xA900
        assoc.release()
        _run_job(dicom, "logged", fail=False)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    stow = [e for e in lines if e["message"].startswith("STOW-RS failed")]
    assert stow and stow[0]["request"] == "req-7400" and stow[0]["level"] == "INFO" and stow[0]["time"]
    store = [e for e in lines if e["message"].startswith(f"C-STORE {short.SOPInstanceUID}")]
    assert store and store[0]["association"].startswith("a"), lines
    job = [e for e in lines if e["message"] == "handling the test job"]
    assert job and job[0]["kind"] == KIND and job[0]["job"].isdigit()
    done = [e for e in lines if e["message"].startswith(f"job {job[0]['job']} ")]
    assert done and done[0]["job"] == job[0]["job"]


def test_text_log_lines_show_the_bound_ids(capsys: pytest.CaptureFixture[str]) -> None:
    with _logging_as("text"), logs.bound(request="r1", job=7):
        logging.getLogger("tests.observability").warning("something happened")
    assert "WARNING tests.observability [request=r1 job=7]: something happened" in capsys.readouterr().err


def test_dashboard_and_alerts_use_only_metrics_the_archive_exposes(node: tuple[Node, TestClient]) -> None:
    _dicom, client = node
    families = {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}
    dashboard = json.loads((REPO / "deploy" / "grafana" / "cloudfilm.json").read_text())
    alerts = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    used = {re.sub(r"_(bucket|count|sum|total)$", "", m) for e in exprs for m in re.findall(r"cloudfilm_[a-z_]+", e)}
    assert used and used <= families, used - families
    assert len(alerts["groups"][0]["rules"]) >= 6
