"""The AI runner in-process, on SQLite and PostgreSQL: registry, routing of stable studies, plugin
jobs in child processes (success, raise, hang), exactly one SR per job, re-runs, remote plugins."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from sqlalchemy import select, update

from ai_plugins.runner.child import preload
from ai_plugins.runner.models import PluginResult
from ai_plugins.runner.registry import PluginSource, RemoteManifest
from ai_plugins.runner.results import ResultUids, build_result_objects
from ai_plugins.runner.routing import JOB_KIND, Router, input_series, study_contents
from ai_plugins.runner.service import PluginService
from ai_plugins.runner.source import ArchiveSource
from ai_plugins.runner.tokens import check_job_token
from ai_plugins.runner.worker import Worker
from ai_plugins.sdk import InputFilter, StudyInput
from pacs.access import AccessScope
from pacs.accounts.keys import secret_key
from pacs.archive import Archive
from pacs.errors import Conflict, NotFound
from pacs.index.db import utcnow
from pacs.ingest import DEFAULT, IngestResult
from pacs.jobs import Job, JobStatus, JobView
from pacs.partitions import Partition
from pacs.query import Level, QueryRequest, run_query
from pacs.retrieve import find_instances, open_instance
from pacs.stability import StabilityDetector
from tests.ai_plugins.sample_plugins import (
    EchoPlugin,
    EchoPluginV2,
    HangingPlugin,
    MrOnlyPlugin,
    RaisingPlugin,
    ReportReaderPlugin,
    report,
)
from tests.factories import make_ct_study, to_bytes
from tests.jobsupport import DB_BACKENDS, FakeClock, db_settings
from tests.net import JsonStubHandler

AGE = 30.0
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR


@pytest.fixture(params=[DB_BACKENDS[0], pytest.param(DB_BACKENDS[1], marks=pytest.mark.postgres)])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    overrides = {"job_retry_backoff": 0.01, "job_max_attempts": 2, "job_lease": 10.0, "stable_age": AGE}
    with db_settings(request.param, tmp_path, **overrides) as settings, Archive.open(settings) as opened:
        yield opened


class Harness:
    """The worker driven step by step: a settable clock for stability, jobs run synchronously."""

    def __init__(self, archive: Archive, *plugins: type[Any]) -> None:
        self.archive = archive
        self.worker = Worker(archive, concurrency=0, kinds=[JOB_KIND], extra_plugins=plugins, use_entry_points=False)
        self.worker.registry.sync()
        preload(["tests.ai_plugins.sample_plugins"])  # as Worker.start does
        self.router = Router(self.worker.registry, max_attempts=archive.settings.job_max_attempts)
        self.clock = FakeClock()
        self.detector = StabilityDetector(archive.engine, AGE, self.router.on_stable, clock=self.clock)

    def store(self, seed: int, *, n: int = 4, start: int = 0, study_uid: str | None = None) -> str:
        uid = study_uid or f"1.2.826.0.1.3680043.10.{seed}"
        for ds in make_ct_study(n_slices=start + n, rows=16, cols=16, seed=seed, study_uid=uid)[start:]:
            assert self.archive.ingest.store_bytes(to_bytes(ds)).ok
        return uid

    def settle(self) -> list[str]:
        """Let the stable age pass after the last arrival (jobs store in real time) and run the detector;
        the studies that became stable."""
        self.clock.now = max(self.clock.now, utcnow()) + timedelta(seconds=AGE + 1)
        return [s.study_uid for s in self.detector.poll()]

    def run_jobs(self, max_rounds: int = 10) -> list[JobView]:
        """Claim and execute every due job (retries included, their backoff being tiny)."""
        import time

        for _ in range(max_rounds):
            claimed = self.worker.queue.claim("test-worker", [JOB_KIND], limit=10)
            if not claimed:
                if not any(j.status is JobStatus.RETRYING for j in self.jobs()):
                    break
                time.sleep(0.05)
                continue
            for job in claimed:
                self.worker.execute(job)
        return self.jobs()

    def jobs(self) -> list[JobView]:
        return self.worker.queue.list_jobs(kind=JOB_KIND)

    def srs(self, study_uid: str) -> list[Any]:
        request = QueryRequest(Level.IMAGE, {"StudyInstanceUID": study_uid, "Modality": "SR"})
        return list(run_query(self.archive.engine, request))


def _read(archive: Archive, sop_uid: str) -> pydicom.Dataset:
    [inst] = find_instances(archive.engine, AccessScope.everything(), sop_uid=sop_uid)
    with open_instance(archive.store, inst) as fh:
        return pydicom.dcmread(io.BytesIO(fh.read()))


# --- registry --------------------------------------------------------------------------------


def test_installed_plugins_are_registered_enabled_and_remote_ones_disabled(archive: Archive) -> None:
    h = Harness(archive, EchoPlugin, RaisingPlugin)
    registry = h.worker.registry
    assert {(p.key, p.source, p.enabled) for p in registry.list_all()} == {
        ("test-echo@1.0", PluginSource.ENTRY_POINT, True),
        ("test-raises@1.0", PluginSource.ENTRY_POINT, True),
    }
    manifest = RemoteManifest(name="vendor-cad", version="2.1", vendor="Acme", endpoint_url="https://acme.invalid/run",
                              timeout_s=30, input_filter=InputFilter(modalities=("CT",)))  # fmt: skip
    view, created = registry.register_remote(manifest, registered_by="acme")
    assert created and view.source is PluginSource.REMOTE and not view.enabled and view.timeout_s == 30
    assert registry.register_remote(manifest, registered_by="acme")[1] is False  # same manifest: idempotent
    with pytest.raises(Conflict):  # versions are immutable
        registry.register_remote(manifest.model_copy(update={"timeout_s": 60}), registered_by="acme")
    with pytest.raises(Conflict):  # a name belongs to one vendor
        registry.register_remote(manifest.model_copy(update={"version": "9"}), registered_by="other")
    with pytest.raises(Conflict):
        registry.register_remote(manifest.model_copy(update={"name": "test-echo"}), registered_by="acme")
    newer, _ = registry.register_remote(manifest.model_copy(update={"version": "2.10"}), registered_by="acme")
    registry.set_enabled("vendor-cad", "2.1", True)
    assert registry.latest("vendor-cad").version == "2.1"
    registry.set_enabled("vendor-cad", "2.10", True)
    assert registry.latest("vendor-cad").version == "2.10"
    with pytest.raises(NotFound):
        registry.set_enabled("vendor-cad", "3.0", True)
    with pytest.raises(ValueError):
        RemoteManifest(name="x", version="1", vendor="v", endpoint_url="ftp://acme.invalid/")


def test_a_newly_installed_version_supersedes_the_older_one(archive: Archive) -> None:
    Harness(archive, EchoPlugin)
    upgraded = Harness(archive, EchoPluginV2)
    states = {(p.key, p.enabled, p.installed) for p in upgraded.worker.registry.list_all()}
    assert states == {("test-echo@1.0", False, False), ("test-echo@2.0", True, True)}
    upgraded.worker.registry.set_enabled("test-echo", "1.0", True)  # an admin may keep both
    Harness(archive, EchoPluginV2)  # a later start changes nothing
    assert all(p.enabled for p in upgraded.worker.registry.list_all())
    uid = upgraded.store(seed=15)
    upgraded.settle()
    assert sorted(j.target_version for j in upgraded.jobs() if j.study_uid == uid) == ["1.0", "2.0"]
    [old] = [j for j in upgraded.run_jobs() if j.target_version == "1.0"]
    assert old.status is JobStatus.FAILED and "not installed" in old.error


# --- routing -----------------------------------------------------------------------------------


def test_a_stable_study_gets_one_job_per_matching_enabled_plugin(archive: Archive) -> None:
    h = Harness(archive, EchoPlugin, MrOnlyPlugin, RaisingPlugin)
    h.worker.registry.set_enabled("test-raises", "1.0", False)
    uid = h.store(seed=1)
    assert h.settle() == [uid]
    [job] = h.jobs()
    assert (job.target, job.study_uid, job.generation, job.status) == ("test-echo", uid, 1, JobStatus.QUEUED)
    assert job.requested_by == "stable-study" and len(job.payload["series"]) == 1
    assert h.settle() == []  # no second trigger
    assert len(h.jobs()) == 1


def test_new_data_runs_the_plugin_again_but_its_own_output_does_not(archive: Archive) -> None:
    h = Harness(archive, EchoPlugin)
    uid = h.store(seed=2)
    h.settle()
    [first] = h.run_jobs()
    assert first.status is JobStatus.SUCCEEDED, first.error
    # The SR made the study unstable; its next transition enqueues nothing: the input is unchanged.
    assert h.settle() == [uid]
    assert len(h.jobs()) == 1
    with archive.engine.connect() as conn:
        contents = study_contents(conn, uid)
    assert [s.modality for s in contents.series] == ["CT"]  # the SR series is not plugin input
    assert input_series(InputFilter(), contents) == list(contents.series)
    # A late series of the same study: a second run, a second SR, the first kept.
    h.store(seed=3, n=4, study_uid=uid)
    assert h.settle() == [uid]
    jobs = h.run_jobs()
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    assert jobs[0].generation > jobs[1].generation
    assert len(h.srs(uid)) == 2


# --- execution --------------------------------------------------------------------------------


def test_the_plugin_runs_and_its_sr_lands_in_the_study(archive: Archive) -> None:
    h = Harness(archive, EchoPlugin)
    uid = h.store(seed=4)
    h.settle()
    [job] = h.run_jobs()
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.attempts == 1 and job.progress == 1.0 and job.run_s is not None
    assert job.result["findings"] == 2 and job.result["classifications"][0]["probability"] == 0.9
    [sr_match] = h.srs(uid)
    sr_uid = sr_match.get("SOPInstanceUID")
    sr_ref, seg_ref = job.result["objects"]
    assert sr_ref == {
        "kind": "SR",
        "sop_instance_uid": sr_uid,
        "series_instance_uid": sr_match.get("SeriesInstanceUID"),
    }
    [seg_match] = run_query(archive.engine, QueryRequest(Level.IMAGE, {"StudyInstanceUID": uid, "Modality": "SEG"}))
    assert seg_ref["kind"] == "SEG" and seg_ref["sop_instance_uid"] == seg_match.get("SOPInstanceUID")
    seg = hd.seg.segread(io.BytesIO(to_bytes(_read(archive, seg_ref["sop_instance_uid"]))))
    assert seg.StudyInstanceUID == uid and seg.number_of_segments == 1
    sr = hd.sr.srread(io.BytesIO(to_bytes(_read(archive, sr_uid))))
    assert sr.StudyInstanceUID == uid
    ct_uids = {i.sop_uid for i in find_instances(archive.engine, AccessScope.everything(), study_uid=uid)
               if i.sop_class_uid != sr.SOPClassUID}  # fmt: skip
    referenced = {str(item.ReferencedSOPInstanceUID) for seq in sr.CurrentRequestedProcedureEvidenceSequence
                  for series in seq.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}  # fmt: skip
    assert referenced and referenced <= ct_uids
    assert [(r.kind, r.sop_uid) for r in _results(archive, uid)] == [
        ("SR", sr_uid),
        ("SEG", seg_ref["sop_instance_uid"]),
    ]


def _results(archive: Archive, study_uid: str) -> list[Any]:
    with archive.engine.connect() as conn:
        return list(conn.execute(select(PluginResult).where(PluginResult.study_uid == study_uid)))


def test_a_repeated_attempt_stores_the_same_sr_not_a_second_one(archive: Archive) -> None:
    h = Harness(archive, EchoPlugin)
    uid = h.store(seed=5)
    h.settle()
    [claimed] = h.worker.queue.claim("crashing-worker", [JOB_KIND])
    # The first attempt stores its SR, then its worker dies before recording success...
    given = StudyInput(uid, ArchiveSource(archive.engine, archive.store, uid))
    for obj in build_result_objects(report(given, EchoPlugin.input_filter), given, EchoPlugin.info(),
                                    ResultUids.for_job(claimed.dedupe_key)):  # fmt: skip
        assert archive.ingest.store_bytes(obj.data).ok
    with archive.engine.begin() as conn:  # ...and its lease runs out
        conn.execute(update(Job).values(lease_expires_at=h.clock.now.replace(year=2000)))
    h.worker.queue.reap_expired()
    [job] = h.run_jobs()
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 2
    assert len(h.srs(uid)) == 1


def test_a_plugin_that_raises_fails_its_job_with_the_error_and_the_archive_carries_on(archive: Archive) -> None:
    h = Harness(archive, RaisingPlugin)
    uid = h.store(seed=6)
    h.settle()
    [job] = h.run_jobs()
    assert job.status is JobStatus.FAILED and job.attempts == 2  # retried once, then dead-lettered
    assert job.error == "ValueError: synthetic failure in the plugin"
    assert h.srs(uid) == []
    assert archive.ingest.store_bytes(to_bytes(make_ct_study(n_slices=1, rows=8, cols=8, seed=99)[0])).ok
    assert len(list(run_query(archive.engine, QueryRequest(Level.STUDY)))) == 2


def test_a_plugin_that_hangs_is_killed_at_its_timeout(archive: Archive) -> None:
    h = Harness(archive, HangingPlugin)
    h.worker.queue.backoff_base_s = 0.01
    h.store(seed=7)
    h.settle()
    [job] = h.run_jobs()
    assert job.status is JobStatus.FAILED and job.timeout_s == 1.5
    assert job.error == "the plugin timed out after 1.5 s"


def test_a_disabled_plugin_never_runs(archive: Archive) -> None:
    h = Harness(archive, EchoPlugin)
    h.store(seed=8)
    h.settle()
    [queued] = h.jobs()
    h.worker.registry.set_enabled("test-echo", "1.0", False)
    [job] = h.run_jobs()
    assert job.id == queued.id and job.status is JobStatus.CANCELLED and "disabled" in job.error
    h.store(seed=9)
    h.settle()
    assert len(h.jobs()) == 1


def test_a_rerun_writes_a_new_sr_and_keeps_the_old(archive: Archive) -> None:
    h = Harness(archive, EchoPlugin)
    uid = h.store(seed=10)
    h.settle()
    h.run_jobs()
    job, created = h.router.rerun(archive.engine, h.worker.queue, uid, "test-echo", requested_by="dr-house")
    assert created and job.requested_by == "dr-house"
    again, created = h.router.rerun(archive.engine, h.worker.queue, uid, "test-echo", requested_by="dr-house")
    assert not created and again.id == job.id  # one waiting re-run at a time
    jobs = h.run_jobs()
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    assert len(h.srs(uid)) == 2
    assert h.settle() == [uid]  # the re-run's SR changed the study; the same input is not run again
    assert len(h.jobs()) == 2 and len(h.srs(uid)) == 2
    with pytest.raises(NotFound):
        h.router.rerun(archive.engine, h.worker.queue, uid, "no-such-plugin", requested_by="x")
    with pytest.raises(NotFound):
        h.router.rerun(archive.engine, h.worker.queue, "1.2.3.404", "test-echo", requested_by="x")


# --- exactly-once triggering: a plugin's own output never runs it again, one input one automatic run ---


def test_a_rerun_before_the_study_is_stable_is_the_run_of_that_input(archive: Archive) -> None:
    h = Harness(archive, EchoPlugin)
    uid = h.store(seed=20)
    job, created = h.router.rerun(archive.engine, h.worker.queue, uid, "test-echo", requested_by="dr-house")
    assert created
    [done] = h.run_jobs()
    assert done.status is JobStatus.SUCCEEDED and len(h.srs(uid)) == 1
    # The stable transition (the CT's, now also the SR's) finds that input has had its run.
    assert h.settle() == [uid]
    assert [j.id for j in h.run_jobs()] == [job.id]
    assert len(h.srs(uid)) == 1
    # A second re-run is what the user asked for: it runs, once, and its SR triggers nothing either.
    again, created = h.router.rerun(archive.engine, h.worker.queue, uid, "test-echo", requested_by="dr-house")
    assert created and again.id != job.id
    h.run_jobs()
    assert h.settle() == [uid]
    assert len(h.run_jobs()) == 2 and len(h.srs(uid)) == 2


def test_concurrent_reruns_queue_one_job(archive: Archive) -> None:
    h = Harness(archive, EchoPlugin)
    uid = h.store(seed=21)
    barrier = threading.Barrier(6)
    outcomes: list[tuple[int, bool]] = []

    def click() -> None:
        barrier.wait()
        job, created = h.router.rerun(archive.engine, h.worker.queue, uid, "test-echo", requested_by="dr")
        outcomes.append((job.id, created))

    threads = [threading.Thread(target=click) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({job_id for job_id, _ in outcomes}) == 1 and sum(created for _, created in outcomes) == 1
    assert len(h.jobs()) == 1


def test_a_plugin_enabled_after_the_study_became_stable_runs_once_on_rerun(archive: Archive) -> None:
    h = Harness(archive, EchoPlugin)
    h.worker.registry.set_enabled("test-echo", "1.0", False)
    uid = h.store(seed=22)
    assert h.settle() == [uid] and h.jobs() == []
    h.worker.registry.set_enabled("test-echo", "1.0", True)
    h.router.rerun(archive.engine, h.worker.queue, uid, "test-echo", requested_by="dr")
    h.run_jobs()
    assert h.settle() == [uid]  # the SR's transition: no automatic run of the input the re-run read
    assert len(h.run_jobs()) == 1 and len(h.srs(uid)) == 1


def test_a_job_cancelled_by_disabling_is_not_run_automatically_after_enabling(archive: Archive) -> None:
    h = Harness(archive, EchoPlugin, MrOnlyPlugin)
    uid = h.store(seed=23)
    h.settle()
    [queued] = h.jobs()
    admin = PluginService(archive, extra_plugins=(EchoPlugin, MrOnlyPlugin), use_entry_points=False)
    admin.set_enabled("test-echo", "1.0", False)
    assert h.worker.queue.get(queued.id).status is JobStatus.CANCELLED
    admin.set_enabled("test-echo", "1.0", True)
    h.store(seed=123, study_uid=uid)  # a new series: a new input, its one automatic run
    h.settle()
    new = [j for j in h.run_jobs() if j.id != queued.id]
    assert [j.status for j in new] == [JobStatus.SUCCEEDED] and len(h.srs(uid)) == 1
    assert h.settle() == [uid]  # that run's SR: nothing queued
    rerun, _ = h.router.rerun(archive.engine, h.worker.queue, uid, "test-echo", requested_by="dr")
    h.run_jobs()
    assert h.settle() == [uid]
    assert {j.id for j in h.jobs()} == {queued.id, new[0].id, rerun.id} and len(h.srs(uid)) == 2


def _failing_after_the_sr(archive: Archive, monkeypatch: pytest.MonkeyPatch,
                          then: Callable[[], None]) -> None:  # fmt: skip
    """Make the next plugin SR stored be followed by ``then`` (once), as if the attempt stopped there."""
    store = archive.ingest.store_bytes
    pending = [then]

    def store_bytes(data: bytes, label: str = "<bytes>", partition: Partition = DEFAULT) -> IngestResult:
        result = store(data, label, partition)
        if pending and label.endswith(" SR"):
            pending.pop()()
        return result

    monkeypatch.setattr(archive.ingest, "store_bytes", store_bytes)


def test_a_retried_job_whose_first_attempt_stored_its_sr_is_not_triggered_by_it(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(archive, ReportReaderPlugin)  # reads SRs: its own would be input if not known as its output
    uid = h.store(seed=24)
    h.settle()

    def fail() -> None:
        raise OSError("the disk went away after the SR")

    _failing_after_the_sr(archive, monkeypatch, fail)
    [claimed] = h.worker.queue.claim("w", [JOB_KIND])
    h.worker.execute(claimed)
    assert h.worker.queue.get(claimed.id).status is JobStatus.RETRYING and len(h.srs(uid)) == 1
    assert h.settle() == [uid]  # the first attempt's SR arrived: the study changed, its input did not
    [job] = h.run_jobs()
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 2
    assert h.settle() == [uid] and len(h.jobs()) == 1
    assert len(h.srs(uid)) == 1 and sorted(r.kind for r in _results(archive, uid)) == ["SEG", "SR"]


def test_a_job_whose_lease_expired_mid_run_stores_its_objects_once_and_is_not_retriggered(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(archive, ReportReaderPlugin)
    uid = h.store(seed=25)
    h.settle()
    retried: list[JobView] = []

    def stall() -> None:
        # This worker stalls past its lease after the SR: the reaper requeues the job, a stable
        # transition comes, another worker runs the job to the end; then this attempt resumes.
        with archive.engine.begin() as conn:
            conn.execute(update(Job).values(lease_expires_at=h.clock.now.replace(year=2000)))
        assert h.worker.queue.reap_expired() == 1
        assert h.settle() == [uid]
        retried.extend(h.run_jobs())

    _failing_after_the_sr(archive, monkeypatch, stall)
    [claimed] = h.worker.queue.claim("stalling-worker", [JOB_KIND])
    h.worker.execute(claimed)
    [job] = retried
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 2
    assert h.jobs() == [h.worker.queue.get(job.id)]  # the stalled attempt wrote nothing over it
    assert h.settle() == [uid] and len(h.jobs()) == 1
    assert len(h.srs(uid)) == 1 and sorted(r.kind for r in _results(archive, uid)) == ["SEG", "SR"]


# --- remote plugins ------------------------------------------------------------------------------


class _Vendor(JsonStubHandler):
    answer: Any = None
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append(body)
        payload = type(self).answer(body) if callable(type(self).answer) else type(self).answer
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.reply_json(data)


@pytest.fixture
def vendor() -> Iterator[tuple[str, type[_Vendor]]]:
    handler = type("Vendor", (_Vendor,), {"answer": None, "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/analyse", handler
    server.shutdown()


def test_a_remote_plugin_answers_findings_that_become_an_sr(archive: Archive, vendor: Any) -> None:
    url, handler = vendor
    h = Harness(archive)
    manifest = RemoteManifest(name="acme-cad", version="1", vendor="Acme", endpoint_url=url, timeout_s=20,
                              input_filter=InputFilter(modalities=("CT",)))  # fmt: skip
    h.worker.registry.register_remote(manifest, registered_by="acme")
    uid = h.store(seed=11)
    h.settle()
    assert h.jobs() == []  # registered, not yet enabled by an admin
    h.worker.registry.set_enabled("acme-cad", "1", True)
    other = h.store(seed=12)
    h.settle()
    assert [j.study_uid for j in h.jobs()] == [other]

    def findings(body: dict[str, Any]) -> bytes:
        study = StudyInput(body["study_instance_uid"], ArchiveSource(archive.engine, archive.store, other))
        return report(study, InputFilter(modalities=("CT",))).to_json().encode()

    handler.answer = findings
    [job] = h.run_jobs()
    assert job.status is JobStatus.SUCCEEDED, job.error
    [body] = handler.received
    assert body["study_instance_uid"] == other and body["series_instance_uids"] == job.payload["series"]
    assert body["dicomweb_url"].endswith("/dicomweb") and body["token_type"] == "Bearer"
    grant = check_job_token(secret_key(archive.settings), body["access_token"])
    assert grant is not None and grant.study_uid == other and grant.job_id == job.id
    assert grant.scope() == AccessScope.studies(other)
    assert grant.allows_request("GET", f"/dicomweb/studies/{other}/series")
    assert grant.allows_request("POST", f"/dicomweb/studies/{other}")
    assert not grant.allows_request("GET", f"/dicomweb/studies/{uid}/series")
    assert not grant.allows_request("POST", f"/dicomweb/studies/{uid}")
    assert not grant.allows_request("GET", "/dicomweb/studies")
    assert not grant.allows_request("DELETE", f"/dicomweb/studies/{other}")
    assert len(h.srs(other)) == 1 and h.srs(uid) == []


def test_a_remote_plugin_with_a_bad_answer_fails_with_a_reason(archive: Archive, vendor: Any) -> None:
    url, handler = vendor
    h = Harness(archive)
    h.worker.registry.register_remote(RemoteManifest(name="acme-bad", version="1", vendor="Acme", endpoint_url=url),
                                    registered_by="acme")  # fmt: skip
    h.worker.registry.set_enabled("acme-bad", "1", True)
    h.store(seed=13)
    h.settle()
    handler.answer = {"schema_version": "1.0", "classifications": [{"code": {"value": "1"}, "probability": 2}]}
    [job] = h.run_jobs()
    assert job.status is JobStatus.FAILED and job.error.startswith("invalid findings JSON")
    handler.answer = {"stored_instances": ["1.2.3.4"]}
    job2, _ = h.router.rerun(archive.engine, h.worker.queue, job.study_uid, "acme-bad", requested_by="t")
    jobs = h.run_jobs()
    assert jobs[0].id == job2.id and "not in the study" in jobs[0].error


def test_a_remote_plugin_that_stores_its_own_sr_is_recorded_and_not_rerun(archive: Archive, vendor: Any) -> None:
    url, handler = vendor
    h = Harness(archive)
    h.worker.registry.register_remote(RemoteManifest(name="acme-stow", version="1", vendor="Acme", endpoint_url=url),
                                    registered_by="acme")  # fmt: skip
    h.worker.registry.set_enabled("acme-stow", "1", True)
    uid = h.store(seed=14)
    h.settle()

    def stow_then_answer(body: dict[str, Any]) -> dict[str, Any]:
        # The vendor writes its own SR and STOWs it with the token (here: stored the way STOW-RS stores).
        study = StudyInput(body["study_instance_uid"], ArchiveSource(archive.engine, archive.store, uid))
        objects = build_result_objects(report(study, InputFilter()), study, EchoPlugin.info(), ResultUids("vendor"))
        assert all(archive.ingest.store_bytes(o.data).ok for o in objects)
        return {"stored_instances": [o.sop_uid for o in objects]}

    handler.answer = stow_then_answer
    [job] = h.run_jobs()
    assert job.status is JobStatus.SUCCEEDED, job.error
    stored = job.result["objects"]
    assert sorted(o["kind"] for o in stored) == ["SEG", "SR"]
    assert sorted(r.sop_uid for r in _results(archive, uid)) == sorted(o["sop_instance_uid"] for o in stored)
    assert h.settle() == [uid]  # the vendor's SR made the study change; its own output triggers nothing
    assert len(h.jobs()) == 1
