"""Several ``serve`` nodes, one archive: three nodes on one PostgreSQL database and one S3 bucket
(each with its own data directory) agree on everything, and one killed with SIGKILL mid-ingest
and mid-job loses nothing acknowledged while the others take over its job."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import select

from pacs.archive import Archive
from pacs.jobs import Job
from pacs.nodes import live_nodes
from pacs.settings import Settings
from tests.ai_plugins.sample_plugins import SLOW_SECONDS_ENV, SlowPlugin
from tests.cli import run_cli, serving, settings_env
from tests.conftest import archive_settings
from tests.e2e.test_ai_pipeline import base_env, only_test_plugins
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.net import free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]

SECRET = "one-secret-key-for-every-node-0123456789"
PASSWORD = "admin-password-of-the-nodes"


@pytest.fixture
def shared(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Settings]:
    for settings in archive_settings("postgres-s3", tmp_path / "shared", request):
        only_test_plugins(settings)
        yield settings


def _node_env(settings: Settings, tmp_path: Path, name: str) -> dict[str, str]:
    env = base_env(tmp_path / name, {"test-slow": SlowPlugin}, **settings_env(settings))
    env.update({"CLOUDFILM_DATA_DIR": str(tmp_path / name / "data"), "CLOUDFILM_SECRET_KEY": SECRET,
                "CLOUDFILM_ADMIN_PASSWORD": PASSWORD, "CLOUDFILM_JOB_LEASE": "6", SLOW_SECONDS_ENV: "15",
                "CLOUDFILM_DICOM_HOST": "127.0.0.1", "CLOUDFILM_WORKER_CONCURRENCY": "1"})
    return {k: v for k, v in env.items() if k.startswith("CLOUDFILM_") or k in ("PYTHONPATH", SLOW_SECONDS_ENV)}


def _c_store(port: int, datasets: list, acked: list[str] | None = None) -> list[str]:  # type: ignore[type-arg]
    """Send ``datasets``; the SOP Instance UIDs acknowledged with success, appended to ``acked`` as they come."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    acked = [] if acked is None else acked
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDFILM")
    if not assoc.is_established:
        return acked
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if not status or status.Status != 0:
                break
            acked.append(str(ds.SOPInstanceUID))
    finally:
        if assoc.is_established:
            assoc.release()
    return acked


def _studies(url: str) -> set[str]:
    found = httpx.get(f"{url}/dicomweb/studies", headers=_admin(url), timeout=30)
    assert found.status_code == 200, found.text
    return {s["0020000D"]["Value"][0] for s in found.json()}


_TOKENS: dict[str, dict[str, str]] = {}


def _admin(url: str) -> dict[str, str]:
    if url not in _TOKENS:
        token = httpx.post(f"{url}/api/auth/token", data={"username": "admin", "password": PASSWORD}, timeout=30)
        assert token.status_code == 200, token.text
        _TOKENS[url] = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return _TOKENS[url]


def _pid_of(settings: Settings, url: str) -> int:
    """The process of the node serving ``url``, as it registered itself (host:pid:serve:HTTP port)."""
    port = url.rsplit(":", 1)[1]
    with Archive.open(settings, create=False) as archive:
        [node] = [n for n in live_nodes(archive.engine) if n.node_id.endswith(f":serve:{port}")]
    return int(node.node_id.split(":")[1])


def test_three_nodes_on_one_database_and_bucket(shared: Settings, tmp_path: Path) -> None:
    ports = {name: free_port() for name in "ABC"}
    with ExitStack() as stack:
        nodes = {}
        for name in "ABC":
            env = _node_env(shared, tmp_path, name)
            url, _log = stack.enter_context(serving(tmp_path / name / "data", env=env,
                                                    CLOUDFILM_DICOM_PORT=str(ports[name])))
            nodes[name] = url
        with Archive.open(shared, create=False) as archive:
            assert len(live_nodes(archive.engine)) == 3

        # a node signing with another key is refused before it serves anything
        other = _node_env(shared, tmp_path, "D") | {"CLOUDFILM_SECRET_KEY": "another-secret-key-0123456789"}
        refused = run_cli("serve", env=other | {"CLOUDFILM_HTTP_PORT": str(free_port()),
                                                "CLOUDFILM_DICOM_PORT": str(free_port())})
        assert refused.returncode == 2 and "signs with another secret key" in refused.stderr, refused.stderr

        # intake over every node; every node sees everything at once
        studies = [make_ct_study(PATIENTS[i], n_slices=4, rows=32, cols=32, seed=7500 + i) for i in range(3)]
        assert len(_c_store(ports["A"], studies[0])) == 4
        boundary = "nodes-test"
        body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + to_bytes(ds)
                        + b"\r\n" for ds in studies[1]) + b"--" + boundary.encode() + b"--\r\n"
        stow = httpx.post(f"{nodes['B']}/dicomweb/studies", content=body, timeout=60, headers={
            **_admin(nodes["B"]), "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
        assert stow.status_code == 200, stow.text
        assert len(_c_store(ports["C"], studies[2])) == 4
        uids = {str(s[0].StudyInstanceUID) for s in studies}
        for url in nodes.values():
            assert _studies(url) >= uids

        # a share link made on A opens on B and C; wrong PINs count on every node
        share = httpx.post(f"{nodes['A']}/api/studies/{studies[0][0].StudyInstanceUID}/shares",
                           json={"pin": "2468"}, headers=_admin(nodes["A"]), timeout=30)
        assert share.status_code == 201, share.text
        token = share.json()["url"].rsplit("/s/", 1)[1]
        answers = [httpx.post(f"{nodes[n]}/s/{token}", data={"pin": "0000"}, timeout=30).status_code
                   for n in "ABCAB"]
        assert answers == [401, 401, 401, 401, 429], answers
        assert httpx.post(f"{nodes['C']}/s/{token}", data={"pin": "2468"}, timeout=30).status_code == 429

        # each study's plugin job runs once; kill -9 the node running one, mid-ingest too
        with Archive.open(shared, create=False) as archive:
            deadline = time.monotonic() + 180
            while True:
                with archive.engine.connect() as conn:
                    running = conn.execute(select(Job.id, Job.lease_owner).where(
                        Job.status == "running", Job.kind == "plugin")).first()
                if running is not None:
                    break
                assert time.monotonic() < deadline, "no plugin job started"
                time.sleep(0.5)
            job_id, owner = running
            victim_pid = int(owner.split(":")[1])
            victim = next(n for n in "ABC" if _pid_of(shared, nodes[n]) == victim_pid)
            more = make_ct_study(PATIENTS[3], n_slices=400, rows=32, cols=32, seed=7600)
            acked: list[str] = []
            sender = threading.Thread(target=_c_store, args=(ports[victim], more, acked))
            sender.start()
            while len(acked) < 5 and sender.is_alive():
                time.sleep(0.05)
            os.kill(victim_pid, signal.SIGKILL)
            sender.join(timeout=60)
            assert 5 <= len(acked) < 400, len(acked)
            survivor = nodes[next(n for n in "ABC" if n != victim)]
            found = httpx.get(f"{survivor}/dicomweb/studies/{more[0].StudyInstanceUID}/instances",
                              headers=_admin(survivor), timeout=30)
            assert found.status_code == 200
            assert set(acked) <= {i["00080018"]["Value"][0] for i in found.json()}  # nothing acknowledged lost

            deadline = time.monotonic() + 300
            while True:
                with archive.engine.connect() as conn:
                    jobs = conn.execute(select(Job.id, Job.study_uid, Job.status, Job.lease_owner, Job.attempts)
                                        .where(Job.kind == "plugin", Job.study_uid.in_(uids))).all()
                if len(jobs) == 3 and all(j.status == "succeeded" for j in jobs):
                    break
                assert time.monotonic() < deadline, jobs
                time.sleep(1)
            assert sorted(j.study_uid for j in jobs) == sorted(uids)  # one job per study
            retried = next(j for j in jobs if j.id == job_id)
            assert retried.attempts >= 2  # the killed node's attempt, then a survivor's (the victim is gone)
            for uid in uids:  # one result per study: the plugin's SR stored once
                series = httpx.get(f"{survivor}/dicomweb/studies/{uid}/series", params={"Modality": "SR"},
                                   headers=_admin(survivor), timeout=30)
                assert series.status_code == 200 and len(series.json()) == 1, (uid, series.text)
    # The kill -9 may land between an object's write and its index commit: that instance was never
    # acknowledged, and its object is an orphan (or a temp leftover) fsck reports and --repair
    # removes. Nothing else.
    checked = run_cli("fsck", env=settings_env(shared))
    problems = [line for line in checked.stdout.splitlines() if not line.endswith("problems")]
    more_uids = {str(ds.SOPInstanceUID) for ds in more}
    for line in problems:
        if line.startswith("leftover: "):  # a temp or spool file of the killed write
            continue
        assert line.startswith("orphan object: "), checked.stdout + checked.stderr
        sop_uid = line.rsplit("/", 1)[1].split(".dcm")[0].rsplit(".", 1)[0]
        assert sop_uid in more_uids - set(acked), line
    if problems:
        repaired = run_cli("fsck", "--repair", "--grace", "0", env=settings_env(shared))
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        checked = run_cli("fsck", env=settings_env(shared))
    assert checked.returncode == 0, checked.stdout + checked.stderr
