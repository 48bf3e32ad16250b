"""The AI pipeline end to end, as users run it: ``cloudfilm serve`` / ``cloudfilm worker`` in
subprocesses on free loopback ports, studies sent with DCMTK's ``storescu``, results read back
over DICOMweb and checked with highdicom and ``dciodvfy``."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import highdicom as hd
import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydantic import SecretStr

from ai_plugins.runner.registry import PluginRegistry
from ai_plugins.runner.routing import JOB_KIND
from ai_plugins.runner.tokens import check_job_token
from ai_plugins.sdk import InputFilter, StudyInput, codes
from pacs.access import AccessScope
from pacs.accounts.api_keys import create_api_key
from pacs.accounts.keys import secret_key
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.jobs import JobQueue, JobStatus, JobView
from pacs.query import Level, QueryRequest, run_query
from pacs.retrieve import find_instances
from pacs.settings import Settings
from tests.ai_plugins.sample_plugins import (
    MARKER_DIR_ENV,
    SLOW_SECONDS_ENV,
    EchoPlugin,
    HangingPlugin,
    RaisingPlugin,
    SlowPlugin,
    report,
    write_entry_points,
)
from tests.cli import settings_env
from tests.factories import make_ct_study, to_bytes, write_files
from tests.jobsupport import db_settings
from tests.net import JsonStubHandler, free_port

REPO = Path(__file__).resolve().parents[2]
CLOUDFILM = str(Path(sys.executable).with_name("cloudfilm"))
STORESCU = "/usr/bin/storescu"
DCIODVFY = "/usr/bin/dciodvfy"
ECHO_SR = "AI test-echo@1.0 findings"

pytestmark = pytest.mark.slow



def base_env(tmp_path: Path, plugins: dict[str, type[Any]], **extra: str) -> dict[str, str]:
    """A clean environment: test plugins as entry points, fast stability, quick retries."""
    ep_dir = write_entry_points(tmp_path / "entry-points", plugins)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(ep_dir), str(REPO)]),
        "CLOUDFILM_STABLE_AGE": "1",
        "CLOUDFILM_JOB_POLL_INTERVAL": "0.2",
        "CLOUDFILM_JOB_RETRY_BACKOFF": "0.2",
        "CLOUDFILM_JOB_MAX_ATTEMPTS": "2",
        "CLOUDFILM_JOB_LEASE": "2",
        "CLOUDFILM_LOG_LEVEL": "INFO",
        "CLOUDFILM_PROCESSES": "1",  # these tests kill and follow one process (test_processes.py runs several)
    })  # fmt: skip
    env.update(extra)
    return env


def only_test_plugins(settings: Settings) -> None:
    """Create the archive and switch off the installed plugins (``lesion-detector`` …): only test plugins run."""
    with Archive.open(settings) as archive:
        registry = PluginRegistry(archive.engine)
        for plugin in registry.sync():
            if not plugin.name.startswith("test-"):
                registry.set_enabled(plugin.name, plugin.version, False)


@contextmanager
def running(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``cloudfilm`` subprocess, stopped (SIGTERM, then SIGKILL) on exit; its output goes to ``log``."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([CLOUDFILM, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def wait_for(what: str, check: Callable[[], Any], timeout: float, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-6000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n--- log ---\n{tail}")


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"cloudfilm exited with {proc.returncode}\n{log.read_text(errors='replace')[-6000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the HTTP server", up, 180, log)  # start-up imports torch: slow on a loaded machine


def plugin_jobs(settings: Settings, study_uid: str) -> list[JobView]:
    """The jobs of the test plugins (installed plugins such as ``lesion-detector`` may run too)."""
    with Archive.open(settings, migrate=False) as archive:
        jobs = JobQueue(archive.engine).list_jobs(kind=JOB_KIND, study_uid=study_uid)
    return [j for j in jobs if j.target.startswith("test-")]


def dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


# --- storescu → stable → plugin → SR in QIDO ------------------------------------------------------


def test_storescu_study_gets_an_sr_that_qido_finds_and_dciodvfy_accepts(tmp_path: Path) -> None:
    http_port, dicom_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    settings = Settings(data_dir=tmp_path / "data")
    env = base_env(
        tmp_path,
        {"test-echo": EchoPlugin, "test-raises": RaisingPlugin, "test-hangs": HangingPlugin},
        **settings_env(settings),
        CLOUDFILM_HTTP_PORT=str(http_port),
        CLOUDFILM_DICOM_PORT=str(dicom_port),
        CLOUDFILM_DICOM_HOST="127.0.0.1",
        CLOUDFILM_AUTH_DISABLED="true",
        CLOUDFILM_WORKER_CONCURRENCY="2",
    )
    datasets = make_ct_study(n_slices=12, rows=32, cols=32, seed=601, study_uid="1.2.826.0.1.3680043.10.601")
    study_uid = str(datasets[0].StudyInstanceUID)
    files = write_files(datasets, tmp_path / "study")
    log = tmp_path / "serve.log"
    only_test_plugins(settings)
    with running(["serve"], env, log) as proc:
        wait_http(url, proc, log)
        sent = subprocess.run([STORESCU, "-aec", "CLOUDFILM", "-aet", "MODALITY", "127.0.0.1", str(dicom_port),
                               *map(str, files)], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert sent.returncode == 0, sent.stderr

        def sr_series() -> list[dict[str, Any]]:
            r = httpx.get(f"{url}/dicomweb/studies/{study_uid}/series", params={"Modality": "SR"}, timeout=5)
            found = r.json() if r.status_code == 200 else []
            return [s for s in found if s.get("0008103E", {}).get("Value") == [ECHO_SR]]

        [series] = wait_for("the plugin's SR in QIDO", sr_series, 60, log)
        series_uid = series["0020000E"]["Value"][0]
        client = DICOMwebClient(f"{url}/dicomweb")
        [meta] = client.search_for_instances(study_uid, series_uid)
        sop_uid = meta["00080018"]["Value"][0]
        sr_ds = client.retrieve_instance(study_uid, series_uid, sop_uid)
        [seg_meta] = client.search_for_instances(study_uid, search_filters={"Modality": "SEG"})
        seg_ds = client.retrieve_instance(study_uid, seg_meta["0020000E"]["Value"][0], seg_meta["00080018"]["Value"][0])

        # The failing plugins failed with their error; the archive still answers.
        def failed() -> list[JobView]:
            jobs = plugin_jobs(settings, study_uid)
            return jobs if all(j.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) for j in jobs) else []

        jobs = {j.target: j for j in wait_for("the failing jobs to be dead-lettered", failed, 60, log)}
        api_jobs = httpx.get(f"{url}/api/jobs", params={"study": study_uid}, timeout=5).json()
        echo = jobs["test-echo"]
        assert echo.status is JobStatus.SUCCEEDED and echo.attempts == 1
        assert jobs["test-raises"].status is JobStatus.FAILED and jobs["test-raises"].attempts == 2
        assert jobs["test-raises"].error == "ValueError: synthetic failure in the plugin"
        assert jobs["test-hangs"].status is JobStatus.FAILED
        assert jobs["test-hangs"].error == "the plugin timed out after 1.5 s"
        assert {j["plugin"]: j["status"] for j in api_jobs if j["plugin"].startswith("test-")} == {
            "test-echo": "succeeded", "test-raises": "failed", "test-hangs": "failed"}  # fmt: skip
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        assert len(client.search_for_series(study_uid, search_filters={"Modality": "CT"})) == 1
        plugins = {p["name"]: p for p in httpx.get(f"{url}/api/plugins", timeout=5).json()}
        assert plugins["test-echo"]["enabled"] and plugins["test-echo"]["source"] == "entry-point"

        # The viewer's findings panel shows them: the 2D point as written, the 3D point on the middle slice.
        panel = httpx.get(f"{url}/api/studies/{study_uid}/findings", timeout=10).json()["findings"]
        rows = [r for r in panel if r["plugin"] == "test-echo@1.0" and r["report_uid"] == sop_uid]
        assert [(r["kind"], r["label"], r["shape"]) for r in rows] == [("classification", "High density lesion", None),
                                                                      ("finding", "Nodule", "point"),
                                                                      ("finding", "Mass", "point")]  # fmt: skip
        middle = StudyInput.from_datasets(datasets).series[0].volume.sop_instance_uids[6]
        assert [r["sop_uid"] for r in rows[1:]] == [middle, middle] and rows[2]["projected"] is True
        assert rows[1]["points"] == [[16.0, 16.0]]
        assert rows[1]["text"] == "Lesion 1 · probability 0.80 · Diameter 12.5 mm"

    # The SR: highdicom reads it; it references exactly the CT images; dciodvfy finds no error.
    assert echo.result["objects"][0]["sop_instance_uid"] == sop_uid
    buf = io.BytesIO()
    sr_ds.save_as(buf, enforce_file_format=True)
    sr = hd.sr.srread(io.BytesIO(buf.getvalue()))
    assert sr.StudyInstanceUID == study_uid and sr.PatientID == datasets[0].PatientID
    ct_uids = {str(ds.SOPInstanceUID) for ds in datasets}
    evidence = {str(i.ReferencedSOPInstanceUID) for e in sr.CurrentRequestedProcedureEvidenceSequence
                for s in e.ReferencedSeriesSequence for i in s.ReferencedSOPSequence}  # fmt: skip
    assert evidence == ct_uids
    groups = cast(hd.sr.MeasurementReport, sr.content).get_planar_roi_measurement_groups()
    assert [g.finding_type.value if g.finding_type else None for g in groups] == [codes.NODULE.value, codes.MASS.value]
    image_region, volume_region = (g.roi for g in groups)
    assert isinstance(image_region, hd.sr.ImageRegion) and isinstance(volume_region, hd.sr.ImageRegion3D)
    volume = StudyInput.from_datasets(datasets).series[0].volume
    [source] = image_region.ContentSequence
    assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == volume.sop_instance_uids[6]  # middle slice
    assert volume_region.ReferencedFrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    path = tmp_path / "sr.dcm"
    path.write_bytes(buf.getvalue())
    assert dciodvfy_errors(path) == []

    # The SEG: a segmentation of those same CT images, also valid.
    seg_path = tmp_path / "seg.dcm"
    seg_ds.save_as(seg_path, enforce_file_format=True)
    seg = hd.seg.segread(seg_path)
    assert seg.StudyInstanceUID == study_uid and seg.number_of_segments == 1
    [source_series] = seg.ReferencedSeriesSequence
    assert {str(i.ReferencedSOPInstanceUID) for i in source_series.ReferencedInstanceSequence} == ct_uids
    assert [o["kind"] for o in echo.result["objects"]] == ["SR", "SEG"]
    assert dciodvfy_errors(seg_path) == []


# --- a worker killed mid-job ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes_once(tmp_path: Path, backend: str) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with db_settings(backend, tmp_path) as settings:
        env = base_env(tmp_path, {"test-slow": SlowPlugin}, **settings_env(settings),
                       **{MARKER_DIR_ENV: str(markers), SLOW_SECONDS_ENV: "2"})  # fmt: skip
        datasets = make_ct_study(n_slices=6, rows=16, cols=16, seed=602, study_uid="1.2.826.0.1.3680043.10.602")
        study_uid = str(datasets[0].StudyInstanceUID)
        files = write_files(datasets, tmp_path / "study")
        log = tmp_path / "worker.log"
        only_test_plugins(settings)
        with Archive.open(settings, migrate=False) as archive:
            assert all(archive.ingest.store_file(f).ok for f in files)
        with running(["worker", "--concurrency", "1"], env, log) as first:
            marker = wait_for("the first attempt to start", lambda: sorted(markers.iterdir()), 60, log)[0]
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        plugin_pid = int(marker.name.split("-")[1])
        wait_for("the orphaned plugin process to exit", lambda: not _alive(plugin_pid), 10)
        [job] = plugin_jobs(settings, study_uid)
        assert job.status is JobStatus.RUNNING and job.attempts == 1  # its lease has not run out yet

        with running(["worker", "--concurrency", "2"], env, log):

            def done() -> JobView | None:
                [j] = plugin_jobs(settings, study_uid)
                return j if j.status not in (JobStatus.RUNNING, JobStatus.RETRYING, JobStatus.QUEUED) else None

            job = wait_for("the retried job to finish", done, 90, log)
        assert job.status is JobStatus.SUCCEEDED and job.attempts == 2, job.error
        assert len(list(markers.iterdir())) == 2  # two attempts ran the plugin...
        with Archive.open(settings, migrate=False) as archive:  # ...and the study holds one SR
            query = {"StudyInstanceUID": study_uid, "Modality": "SR", "SeriesDescription": "AI test-slow@1.0 findings"}
            srs = list(run_query(archive.engine, QueryRequest(Level.IMAGE, query)))
        assert [m.get("SOPInstanceUID") for m in srs] == [job.result["objects"][0]["sop_instance_uid"]]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


# --- a vendor-hosted plugin ---------------------------------------------------------------------


class VendorHandler(JsonStubHandler):
    """A vendor's endpoint: reads its study over DICOMweb with the job token, probes what else the
    token opens (it should open nothing else), and answers findings in the SDK's schema."""

    received: list[dict[str, Any]] = []
    probes: dict[str, int] = {}
    other_study = ""
    foreign = b""

    def do_POST(self) -> None:  # noqa: N802
        job = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append(job)
        base, study = job["dicomweb_url"], job["study_instance_uid"]
        auth = {"Authorization": f"Bearer {job['access_token']}"}
        client = DICOMwebClient(base, headers=auth)
        datasets = [client.retrieve_instance(study, series_uid, i["00080018"]["Value"][0])
                    for series_uid in job["series_instance_uids"]
                    for i in client.search_for_instances(study, series_uid)]  # fmt: skip
        other, stow = type(self).other_study, {"Content-Type": STOW_TYPE, "Accept": "application/dicom+json"}
        body = stow_body(type(self).foreign)
        if study != other:
            type(self).probes = {
                "own series": httpx.get(f"{base}/studies/{study}/series", headers=auth).status_code,
                "other series": httpx.get(f"{base}/studies/{other}/series", headers=auth).status_code,
                "all studies": httpx.get(f"{base}/studies", headers=auth).status_code,
                "stow other": httpx.post(f"{base}/studies/{other}", content=body, headers=auth | stow).status_code,
                "stow anywhere": httpx.post(f"{base}/studies", content=body, headers=auth | stow).status_code,
                "stow smuggled": httpx.post(f"{base}/studies/{study}", content=body, headers=auth | stow).status_code,
                "plugins api": httpx.get(base.replace("/dicomweb", "/api/plugins"), headers=auth).status_code,
            }  # fmt: skip
        findings = report(StudyInput.from_datasets(datasets), InputFilter(modalities=("CT",)))
        data = findings.to_json().encode()
        self.reply_json(data)


STOW_BOUNDARY = "vendor-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={STOW_BOUNDARY}'


def stow_body(data: bytes) -> bytes:
    return (f"--{STOW_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{STOW_BOUNDARY}--\r\n".encode())  # fmt: skip


def test_a_remote_plugin_reads_its_study_with_the_job_token_and_its_findings_become_an_sr(tmp_path: Path) -> None:
    vendor = ThreadingHTTPServer(("127.0.0.1", 0), VendorHandler)
    threading.Thread(target=vendor.serve_forever, daemon=True).start()
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    settings = Settings(data_dir=tmp_path / "data", secret_key=SecretStr("e2e-remote-plugin-secret"))
    env = base_env(tmp_path, {}, **settings_env(settings), CLOUDFILM_HTTP_PORT=str(http_port),
                   CLOUDFILM_DICOM_ENABLED="false", CLOUDFILM_SECRET_KEY="e2e-remote-plugin-secret",
                   CLOUDFILM_ADMIN_PASSWORD="admin password 1")  # fmt: skip
    log = tmp_path / "serve.log"
    only_test_plugins(settings)
    with Archive.open(settings, migrate=False) as archive:
        create_user(archive.engine, "acme", "vendor password 1", "vendor")
        vendor_key = {"Authorization": f"Bearer {create_api_key(archive.engine, 'acme', 'cad')[1]}"}
    mine = make_ct_study(n_slices=6, rows=16, cols=16, seed=603, study_uid="1.2.826.0.1.3680043.10.603")
    other = make_ct_study(n_slices=6, rows=16, cols=16, seed=604, study_uid="1.2.826.0.1.3680043.10.604")
    VendorHandler.other_study = str(other[0].StudyInstanceUID)
    VendorHandler.foreign = to_bytes(make_ct_study(n_slices=1, rows=16, cols=16, seed=605,
                                                   study_uid=VendorHandler.other_study)[0])  # fmt: skip
    try:
        with running(["serve"], env, log) as proc:
            wait_http(url, proc, log)
            login = httpx.post(f"{url}/api/auth/token", data={"username": "admin", "password": "admin password 1"})
            admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
            manifest = {"name": "acme-remote", "version": "1.0", "vendor": "Acme", "timeout_s": 60,
                        "endpoint_url": f"http://127.0.0.1:{vendor.server_address[1]}/jobs",
                        "input_filter": {"modalities": ["CT"], "min_slices": 2}}  # fmt: skip
            created = httpx.post(f"{url}/api/plugins", json=manifest, headers=vendor_key, timeout=10)
            assert created.status_code == 201 and created.json()["enabled"] is False
            path = f"{url}/api/plugins/acme-remote/1.0"
            assert httpx.patch(path, json={"enabled": True}, headers=vendor_key, timeout=10).status_code == 403
            enabled = httpx.patch(path, json={"enabled": True}, headers=admin, timeout=10)
            assert enabled.status_code == 200 and enabled.json()["enabled"] is True
            client = DICOMwebClient(f"{url}/dicomweb", headers=admin)
            client.store_instances(other)
            client.store_instances(mine)
            study_uid = str(mine[0].StudyInstanceUID)

            def sr() -> list[dict[str, Any]]:
                return client.search_for_series(study_uid, search_filters={"Modality": "SR"})

            [series] = wait_for("the remote plugin's SR", sr, 60, log)
            assert series["0008103E"]["Value"] == ["AI acme-remote@1.0 findings"]
            jobs = httpx.get(f"{url}/api/jobs", params={"study": study_uid}, headers=vendor_key, timeout=5).json()
            [job] = [j for j in jobs if j["plugin"] == "acme-remote"]
            assert job["status"] == "succeeded" and job["result"]["findings"] == 2
            [sent] = [j for j in VendorHandler.received if j["study_instance_uid"] == study_uid]
            token_auth = {"Authorization": f"Bearer {sent['access_token']}"}
            other_meta = httpx.get(f"{url}/dicomweb/studies/{VendorHandler.other_study}/metadata", headers=token_auth)
            assert other_meta.status_code == 403
    finally:
        vendor.shutdown()

    assert VendorHandler.probes == {
        "own series": 200,
        "other series": 403,
        "all studies": 403,
        "stow other": 403,
        "stow anywhere": 403,
        "stow smuggled": 409,  # an instance of another study sent to its own study: refused by STOW-RS
        "plugins api": 403,
    }
    grant = check_job_token(secret_key(settings), sent["access_token"])
    assert grant is not None and grant.study_uid == study_uid and grant.job_id == job["id"]
    with Archive.open(settings, migrate=False) as archive:  # nothing of the other study was stored by the token
        stored = find_instances(archive.engine, AccessScope.everything(), study_uid=VendorHandler.other_study)
        assert sum(i.sop_class_uid == str(other[0].SOPClassUID) for i in stored) == 6
