"""Inference at the edge (issue 15), as users deploy it: ``cloudfilm serve`` (the archive) and
``cloudfilm worker --archive URL --token TOKEN`` (an edge worker) in separate processes, in separate
folders, sharing nothing but HTTP: the edge process is given no data directory, database or store.

A study STOWed to the archive becomes stable and the edge worker runs the built-in lesion detector
on it: its SR appears in the study. A study C-STOREd next is taken by a second edge worker, which is
killed with SIGKILL in the middle of the job; a third finishes it after the lease expires, a result
posted in the dead worker's name is refused, and the study holds exactly one SR of that job.

An algorithm package a vendor uploads and an admin admits and enables runs on an edge worker in the
sandbox: the edge worker fetches the package file by its SHA-256 into its own cache, installs it
there (its dependency wheel offline), writes the case from the study read over DICOMweb, and the
archive writes the one SR, which names the package's digest.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.ai_plugins.packages import builder
from tests.ai_plugins.sample_plugins import MARKER_DIR_ENV, SLOW_SECONDS_ENV, SlowPlugin, write_entry_points
from tests.cli import CLOUDFILM, run_cli, serving
from tests.e2e.test_ai_pipeline import wait_for
from tests.e2e.test_nodes import _c_store
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.net import free_port

pytestmark = pytest.mark.slow

PASSWORD = "edge-test-admin-password"
REPO = Path(__file__).resolve().parents[2]
SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def _admin(url: str) -> dict[str, str]:
    token = httpx.post(f"{url}/api/auth/token", data={"username": "admin", "password": PASSWORD}, timeout=30)
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def _jobs(url: str, study_uid: str) -> list[dict[str, object]]:
    response = httpx.get(f"{url}/api/jobs", params={"study": study_uid}, headers=_admin(url), timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json())


def _sr_instances(url: str, study_uid: str) -> list[str]:
    """SOP Instance UIDs of every SR in the study, as an admin's QIDO lists them."""
    response = httpx.get(f"{url}/dicomweb/studies/{study_uid}/instances", headers=_admin(url),
                         params={"includefield": "00080016", "limit": "1000"}, timeout=30)
    assert response.status_code == 200, response.text
    return [i["00080018"]["Value"][0] for i in response.json()
            if i.get("00080016", {}).get("Value", [""])[0].startswith(SR_CLASS_PREFIX)]


def _stow(url: str, datasets: list) -> None:  # type: ignore[type-arg]
    boundary = "edge-test"
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + to_bytes(ds) + b"\r\n"
                    for ds in datasets) + f"--{boundary}--\r\n".encode()
    response = httpx.post(f"{url}/dicomweb/studies", content=body, timeout=60, headers={
        **_admin(url), "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert response.status_code == 200, response.text


@contextmanager
def edge_worker(url: str, token: str, folder: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``cloudfilm worker --archive URL --token TOKEN`` in its own folder, with no CLOUDFILM_ setting at all."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "edge.log", "ab") as out:
        proc = subprocess.Popen([CLOUDFILM, "worker", "--archive", url, "--token", token], cwd=folder, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_edge_workers_share_nothing_but_http(tmp_path: Path) -> None:
    entry_points = write_entry_points(tmp_path / "entry-points", {"test-slow": SlowPlugin})
    markers = tmp_path / "markers"
    markers.mkdir()
    pythonpath = os.pathsep.join([str(entry_points), str(REPO)])
    archive_env = {
        "PYTHONPATH": pythonpath, "CLOUDFILM_ADMIN_PASSWORD": PASSWORD, "CLOUDFILM_STABLE_AGE": "1",
        "CLOUDFILM_JOB_POLL_INTERVAL": "0.2", "CLOUDFILM_JOB_LEASE": "3", "CLOUDFILM_JOB_RETRY_BACKOFF": "0.2",
        "CLOUDFILM_JOB_MAX_ATTEMPTS": "3", "CLOUDFILM_WORKER_CONCURRENCY": "1",
        # the archive's own worker routes stable studies and sweeps leases, but leaves these to edge workers
        "CLOUDFILM_EDGE_PLUGINS": '["lesion-detector", "test-slow"]',
    }  # fmt: skip
    edge_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
    edge_env |= {"PYTHONPATH": pythonpath, MARKER_DIR_ENV: str(markers), SLOW_SECONDS_ENV: "30"}
    dicom_port = free_port()
    data = tmp_path / "archive" / "data"
    with serving(data, env=archive_env, CLOUDFILM_DICOM_PORT=str(dicom_port)) as (url, log):
        cli_env = {"CLOUDFILM_DATA_DIR": str(data), "PYTHONPATH": pythonpath}
        tokens = {}
        for name in ("ward-a", "ward-b"):
            added = run_cli("edge-workers", "add", name, env=cli_env)
            assert added.returncode == 0, added.stderr
            tokens[name] = added.stdout.strip()
        assert tokens["ward-a"].startswith("cfe_") and tokens["ward-a"] != tokens["ward-b"]
        wait_for("the plugins to be registered",
                 lambda: "test-slow@1.0" in run_cli("plugins", "list", env=cli_env).stdout, 180, log)
        assert run_cli("plugins", "disable", "test-slow", env=cli_env).returncode == 0

        # 1. a STOWed study: the edge worker runs the built-in lesion detector; the SR is in the study
        first = make_ct_study(PATIENTS[0], n_slices=12, rows=64, cols=64, lesion="random", seed=8101)
        first_uid = str(first[0].StudyInstanceUID)
        with edge_worker(url, tokens["ward-a"], tmp_path / "edge-1", edge_env) as edge:
            _stow(url, first)
            jobs = wait_for("the lesion detector's job to succeed on the edge",
                            lambda: [j for j in _jobs(url, first_uid) if j["status"] == "succeeded"], 300,
                            tmp_path / "edge-1" / "edge.log")
            assert edge.poll() is None
        [job] = jobs
        assert job["plugin"] == "lesion-detector" and job["attempts"] == 1
        srs = _sr_instances(url, first_uid)
        assert [o["sop_instance_uid"] for o in job["result"]["objects"] if o["kind"] == "SR"] == srs  # type: ignore[index, union-attr]
        assert len(srs) == 1
        assert not (tmp_path / "edge-1" / "cloudfilm-data").exists()  # nothing of the archive on the edge

        # 2. a C-STOREd study; the edge worker running its job is killed with SIGKILL mid-job
        assert run_cli("plugins", "disable", "lesion-detector", env=cli_env).returncode == 0
        assert run_cli("plugins", "enable", "test-slow", env=cli_env).returncode == 0
        second = make_ct_study(PATIENTS[1], n_slices=4, rows=32, cols=32, seed=8102)
        second_uid = str(second[0].StudyInstanceUID)
        with edge_worker(url, tokens["ward-a"], tmp_path / "edge-2", edge_env) as doomed:
            assert len(_c_store(dicom_port, second)) == len(second)
            wait_for("the edge worker to start the slow plugin", lambda: list(markers.iterdir()), 300,
                     tmp_path / "edge-2" / "edge.log")
            [running] = [j for j in _jobs(url, second_uid) if j["status"] == "running"]
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait(timeout=30)
        assert running["attempts"] == 1

        # a worker of another machine takes the job once the lease has expired, and finishes it
        edge_env[SLOW_SECONDS_ENV] = "1"
        with edge_worker(url, tokens["ward-b"], tmp_path / "edge-3", edge_env):
            [done] = wait_for("another edge worker to finish the job",
                              lambda: [j for j in _jobs(url, second_uid) if j["status"] == "succeeded"], 300,
                              tmp_path / "edge-3" / "edge.log")
        assert done["id"] == running["id"] and done["attempts"] == 2
        assert len(list(markers.iterdir())) == 2  # one child per attempt, each on its own machine

        # the dead worker's result, posted late in its name, is refused and changes nothing
        late = httpx.post(f"{url}/api/edge/jobs/{done['id']}/complete", timeout=30,
                          headers={"Authorization": f"Bearer {tokens['ward-a']}"},
                          json={"worker_id": f"{socket.gethostname()}:{doomed.pid}:0", "attempt": 1,
                                "findings": {"evaluated_series": []}})  # fmt: skip
        assert late.status_code == 409, late.text
        srs = _sr_instances(url, second_uid)
        assert len(srs) == 1
        assert srs == [o["sop_instance_uid"] for o in done["result"]["objects"] if o["kind"] == "SR"]  # type: ignore[index, union-attr]

        # a revoked edge worker is refused
        assert run_cli("edge-workers", "revoke", "ward-a", env=cli_env).returncode == 0
        refused = httpx.post(f"{url}/api/edge/jobs/lease", headers={"Authorization": f"Bearer {tokens['ward-a']}"},
                             json={"worker_id": "x", "plugins": []}, timeout=30)
        assert refused.status_code == 401


def test_an_admitted_package_runs_sandboxed_on_an_edge_worker(tmp_path: Path) -> None:
    archive_env = {
        "PYTHONPATH": str(REPO), "CLOUDFILM_ADMIN_PASSWORD": PASSWORD, "CLOUDFILM_STABLE_AGE": "1",
        "CLOUDFILM_JOB_POLL_INTERVAL": "0.2", "CLOUDFILM_JOB_LEASE": "10", "CLOUDFILM_WORKER_CONCURRENCY": "1",
        "CLOUDFILM_EDGE_PLUGINS": '["acme-detector", "lesion-detector"]',  # the archive's worker runs neither
    }  # fmt: skip
    edge_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_") and k != "XDG_CACHE_HOME"}
    edge_env |= {"PYTHONPATH": str(REPO), "HOME": str(tmp_path / "edge-home")}
    data = tmp_path / "archive" / "data"
    with serving(data, env=archive_env, CLOUDFILM_DICOM_PORT=str(free_port())) as (url, _log):
        cli_env = {"CLOUDFILM_DATA_DIR": str(data), "PYTHONPATH": str(REPO)}
        added = run_cli("users", "add", "acme", "--role", "vendor", "--password-stdin", env=cli_env,
                        input_text="acme vendor password\n")  # fmt: skip
        assert added.returncode == 0, added.stderr
        token = run_cli("edge-workers", "add", "ward-a", env=cli_env).stdout.strip()
        vendor = httpx.post(f"{url}/api/auth/token", data={"username": "acme", "password": "acme vendor password"},
                            timeout=30).json()["access_token"]  # fmt: skip
        uploaded = httpx.post(f"{url}/api/plugins/packages", params={"filename": "acme-detector-1.0.zip"},
                              content=builder.package(), timeout=60,
                              headers={"Authorization": f"Bearer {vendor}"})  # fmt: skip
        assert uploaded.status_code == 201, uploaded.text
        digest = uploaded.json()["sha256"]
        assert httpx.get(f"{url}/api/edge/packages/{digest}", headers={"Authorization": f"Bearer {token}"},
                         timeout=30).status_code == 404  # not admitted: not handed out  # fmt: skip
        admitted = httpx.post(f"{url}/api/plugins/packages/acme-detector/1.0/admit", headers=_admin(url), timeout=300)
        assert admitted.status_code == 200, admitted.text
        assert run_cli("plugins", "enable", "acme-detector", "1.0", env=cli_env).returncode == 0
        assert run_cli("plugins", "disable", "lesion-detector", env=cli_env).returncode == 0

        study = make_ct_study(PATIENTS[2], n_slices=6, rows=48, cols=48, lesion="random", seed=8103)
        study_uid = str(study[0].StudyInstanceUID)
        folder = tmp_path / "edge"
        with edge_worker(url, token, folder, edge_env):
            _stow(url, study)
            [job] = wait_for("the package's job to succeed on the edge",
                             lambda: [j for j in _jobs(url, study_uid) if j["status"] == "succeeded"], 300,
                             folder / "edge.log")  # fmt: skip
        assert job["plugin"] == "acme-detector" and job["attempts"] == 1
        srs = _sr_instances(url, study_uid)
        assert len(srs) == 1
        assert [o["sop_instance_uid"] for o in job["result"]["objects"] if o["kind"] == "SR"] == srs  # type: ignore[index, union-attr]
        metadata = httpx.get(f"{url}/dicomweb/studies/{study_uid}/metadata", headers=_admin(url), timeout=30)
        assert metadata.status_code == 200, metadata.text
        [sr] = [i for i in metadata.json() if i["00080018"]["Value"][0] == srs[0]]
        assert f"sha256:{digest}" in json.dumps(sr)  # the SR names the package that made its findings

        # the edge worker installed the package in its own cache (the XDG default), from the archive's file
        env = tmp_path / "edge-home" / ".cache" / "cloudfilm" / "edge" / "packages" / "envs" / digest
        assert (env / "acme_detector" / "__init__.py").is_file() and (env / "acme_util.py").is_file()
        edge_log = (folder / "edge.log").read_text()
        assert "packages: sandboxed" in edge_log and f"package sha256 {digest} fetched" in edge_log
        assert not (folder / "cloudfilm-data").exists()  # nothing of the archive on the edge
