"""Jobs per partition (issue 17 item 5), on SQLite and PostgreSQL: two hospitals store a study with the
SAME Study/Series/SOP Instance UIDs; each partition's enabled plugins run on its own copy and store
their SR/SEG into it alone; a webhook of one partition receives that partition's events only; a
routing rule of one partition forwards its studies only (to DCMTK ``storescp``); retention rules of
one partition mark and delete its studies only, and its audit events are its own; a benchmark of one
partition takes its cases, makes its copies and runs its evaluation jobs in that partition alone."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ai_plugins.benchmarks.errors import InvalidBenchmarkData
from ai_plugins.benchmarks.evaluation import CASE_KIND, KINDS
from ai_plugins.benchmarks.service import BenchmarkService
from ai_plugins.runner.child import preload
from ai_plugins.runner.handler import job_queue
from ai_plugins.runner.models import PluginResult
from ai_plugins.runner.routing import JOB_KIND, Router
from ai_plugins.runner.service import PluginService
from ai_plugins.runner.worker import Worker
from pacs.access import AccessScope
from pacs.accounts.audit import AuditQuery
from pacs.accounts.audit import query as audit_query
from pacs.accounts.keys import secret_key
from pacs.accounts.principal import Principal
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.errors import Conflict, NotFound
from pacs.events import read_feed
from pacs.index.db import utcnow
from pacs.jobs import JobStatus
from pacs.partitions import Partition, PartitionConfig
from pacs.query import Level, QueryRequest, run_query
from pacs.retention import holds
from pacs.retention.models import DeletionMark
from pacs.retention.plan import StepKind, plan
from pacs.retention.rules import RetentionRule
from pacs.retention.run import run
from pacs.retrieve import find_instances, open_instance
from pacs.routing.models import RoutingForward
from pacs.stability import StabilityDetector
from pacs.webhooks import registry
from tests.ai_plugins.benchmarks.conftest import lesion_csv
from tests.ai_plugins.benchmarks.plugins import RandomPlugin
from tests.ai_plugins.sample_plugins import EchoPlugin
from tests.ai_plugins.test_worker import wait_until
from tests.factories import PATIENTS, make_ct_study, make_study_set, to_bytes
from tests.jobsupport import DB_BACKENDS, FakeClock, db_settings
from tests.net import free_port
from tests.pacs.dimse.support import storescp
from tests.viewer_api.portal.conftest import PASSWORD, bearer
from tests.webhook_receiver import receiving
from viewer_api.app import create_app

BACKENDS = [DB_BACKENDS[0], pytest.param(DB_BACKENDS[1], marks=pytest.mark.postgres)]
AGE = 30.0
STUDY_UID = "1.2.826.0.1.3680043.10.1717"
PARTITIONS = {"north": PartitionConfig(ae_titles=["NORTH"], name="North General"),
              "south": PartitionConfig(ae_titles=["SOUTH"], name="South County")}  # fmt: skip


@contextlib.contextmanager
def two_hospitals(backend: str, tmp_path: Path, **overrides: Any) -> Iterator[Archive]:
    with db_settings(backend, tmp_path, partitions=PARTITIONS, **overrides) as settings, \
            Archive.open(settings) as opened:  # fmt: skip
        yield opened


def _part(archive: Archive, slug: str) -> Partition:
    found = archive.partitions.by_slug(slug)
    assert found is not None
    return found


def _twins(archive: Archive, n: int = 3) -> dict[str, list[bytes]]:
    """The same study (same UIDs, pixel data and all) stored by both hospitals, each with its own
    patient name: what each one's copy holds is told apart by the name."""
    study = make_ct_study(PATIENTS[0], n_slices=n, rows=16, cols=16, seed=17, study_uid=STUDY_UID)
    stored: dict[str, list[bytes]] = {}
    for slug in ("north", "south"):
        copies = [copy.deepcopy(ds) for ds in study]
        for ds in copies:
            ds.PatientName = f"{slug.title()}^Patient"
        stored[slug] = [to_bytes(ds) for ds in copies]
        for data in stored[slug]:
            assert archive.ingest.store_bytes(data, partition=_part(archive, slug)).ok
    return stored


def _read(archive: Archive, partition: int, sop_uid: str) -> pydicom.Dataset:
    [inst] = find_instances(archive.engine, AccessScope.everything(partition), sop_uid=sop_uid)
    with open_instance(archive.store, inst) as fh:
        return pydicom.dcmread(io.BytesIO(fh.read()))


def _images(archive: Archive, partition: int, modality: str) -> list[str]:
    request = QueryRequest(Level.IMAGE, {"StudyInstanceUID": STUDY_UID, "Modality": modality},
                           scope=AccessScope.everything(partition))  # fmt: skip
    return sorted(str(m.get("SOPInstanceUID")) for m in run_query(archive.engine, request))


# --- plugins -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_partition_runs_its_own_enabled_plugins_on_its_own_copy(backend: str, tmp_path: Path) -> None:
    with two_hospitals(backend, tmp_path, job_retry_backoff=0.01, job_max_attempts=2, stable_age=AGE) as archive:
        north, south = _part(archive, "north"), _part(archive, "south")
        worker = Worker(archive, concurrency=0, kinds=[JOB_KIND], extra_plugins=(EchoPlugin,), use_entry_points=False)
        worker.registry.sync()
        preload(["tests.ai_plugins.sample_plugins"])
        service = PluginService(archive, extra_plugins=(EchoPlugin,), use_entry_points=False)
        # Enabled where installed in the default partition only; north turns it on, south does not (yet).
        assert {p.enabled for p in service.plugins(partition=north.id)} == {False}
        service.set_enabled("test-echo", "1.0", True, partition=north.id, by="north-admin")
        assert [p.enabled for p in service.plugins(partition=north.id)] == [True]
        assert [p.enabled for p in service.plugins(partition=south.id)] == [False]
        assert [p.enabled for p in service.plugins()] == [True]

        _twins(archive)
        clock = FakeClock()
        router = Router(worker.registry, max_attempts=2)
        detector = StabilityDetector(archive.engine, AGE, router.on_stable, clock=clock)
        clock.now = utcnow() + timedelta(seconds=AGE + 1)
        stable = detector.poll()
        assert sorted(s.partition for s in stable) == sorted([north.id, south.id])

        def run_jobs() -> None:
            while claimed := worker.queue.claim("test-worker", [JOB_KIND], limit=10):
                for job in claimed:
                    worker.execute(job)

        run_jobs()
        [job] = service.jobs(partition=north.id)  # south's stable study started nothing: not enabled there
        assert job.status is JobStatus.SUCCEEDED, job.error
        assert job.partition == north.id and service.jobs(partition=south.id) == [] and service.jobs() == []
        with pytest.raises(NotFound):
            service.job(job.id, south.id)  # another partition's job does not exist for its callers

        # South enables it later and re-runs on its study: its own job, on its own copy.
        service.set_enabled("test-echo", "1.0", True, partition=south.id)
        rerun, created = service.rerun(STUDY_UID, "test-echo", version=None, requested_by="south-doctor",
                                       scope=AccessScope.everything(south.id))  # fmt: skip
        assert created and rerun.partition == south.id
        run_jobs()
        [south_job] = service.jobs(partition=south.id)
        assert south_job.status is JobStatus.SUCCEEDED, south_job.error

        for slug, partition, ran in (("north", north.id, job), ("south", south.id, south_job)):
            [sr_uid] = _images(archive, partition, "SR")
            [seg_uid] = _images(archive, partition, "SEG")
            assert {o["sop_instance_uid"] for o in ran.result["objects"]} == {sr_uid, seg_uid}
            sr = _read(archive, partition, sr_uid)
            # The plugin read this partition's copy: its SR names this hospital's patient, not the twin's.
            assert str(sr.PatientName) == f"{slug.title()}^Patient" and sr.StudyInstanceUID == STUDY_UID
            assert [(r.kind, r.sop_uid) for r in service.results(STUDY_UID, partition)] == [("SR", sr_uid),
                                                                                          ("SEG", seg_uid)]
            ai_events = [e for e in read_feed(archive.engine, scope=AccessScope.everything(partition), limit=1000)
                         if e.action.value == "ai-result"]  # fmt: skip
            assert [e.sop_uid for e in ai_events] == [sr_uid]
        # Each SR lies in its own partition only; the default partition holds nothing at all.
        north_sr, south_sr = _images(archive, north.id, "SR"), _images(archive, south.id, "SR")
        assert north_sr != south_sr
        for partition, other_sr in ((north.id, south_sr[0]), (south.id, north_sr[0])):
            with pytest.raises(NotFound):
                find_instances(archive.engine, AccessScope.everything(partition), sop_uid=other_sr)
        assert _images(archive, 1, "SR") == [] and _images(archive, 1, "CT") == []
        with archive.engine.connect() as conn:
            results = {(r.partition_fk, r.sop_uid) for r in conn.execute(select(PluginResult))}
        assert results == {(north.id, north_sr[0]), (south.id, south_sr[0]),
                           (north.id, _images(archive, north.id, "SEG")[0]),
                           (south.id, _images(archive, south.id, "SEG")[0])}  # fmt: skip

        # Disabling in north cancels north's waiting jobs only.
        service.set_enabled("test-echo", "1.0", False, partition=north.id)
        assert [p.enabled for p in service.plugins(partition=north.id)] == [False]
        assert [p.enabled for p in service.plugins(partition=south.id)] == [True]


# --- webhooks ----------------------------------------------------------------------------------


@contextlib.contextmanager
def working(archive: Archive) -> Iterator[Worker]:
    worker = Worker(archive, concurrency=3, use_entry_points=False)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_webhook_of_one_partition_receives_that_partitions_events_only(backend: str, tmp_path: Path) -> None:
    with two_hospitals(backend, tmp_path, stable_age=1.0, job_poll_interval=0.1, job_retry_backoff=0.2,
                       job_retry_backoff_max=1.0) as archive, receiving() as north_rx, receiving() as south_rx:
        north, south = _part(archive, "north"), _part(archive, "south")
        key = secret_key(archive.settings)
        north_hook, north_rx.secret = registry.register(archive.engine, key, north_rx.url, partition=north.id)
        south_hook, south_rx.secret = registry.register(archive.engine, key, south_rx.url, partition=south.id)
        assert [h.id for h in registry.list_webhooks(archive.engine, north.id)] == [north_hook.id]
        assert registry.list_webhooks(archive.engine) == []  # the default partition has none
        with pytest.raises(NotFound):
            registry.get(archive.engine, north_hook.id, south.id)
        with pytest.raises(NotFound):
            registry.remove(archive.engine, north_hook.id, south.id)
        _twins(archive)
        feeds = {p: [e.sequence for e in read_feed(archive.engine, scope=AccessScope.everything(p), limit=1000)]
                 for p in (north.id, south.id)}  # fmt: skip
        assert len(feeds[north.id]) == len(feeds[south.id]) == 3 and not set(feeds[north.id]) & set(feeds[south.id])
        with working(archive):  # 3 creates each, then a stable transition each (stable_age 1 s)
            wait_until("every event", lambda: len(north_rx.unique()) == 4 and len(south_rx.unique()) == 4,
                       timeout=120)  # fmt: skip
        for rx, partition in ((north_rx, north.id), (south_rx, south.id)):
            assert rx.bad_signatures == 0
            expected = [e.sequence for e in read_feed(archive.engine, scope=AccessScope.everything(partition),
                                                      limit=1000)]  # fmt: skip
            assert sorted(r.sequence for r in rx.unique().values()) == expected
            assert {r.study for r in rx.accepted} == {STUDY_UID}
        assert not {r.sequence for r in north_rx.accepted} & {r.sequence for r in south_rx.accepted}
        log = registry.deliveries(archive.engine, north_hook.id, partition=north.id)
        assert len(log) == 4
        with pytest.raises(NotFound):
            registry.deliveries(archive.engine, north_hook.id, partition=south.id)


# --- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_routing_rule_of_one_partition_forwards_its_studies_only(backend: str, tmp_path: Path) -> None:
    port = free_port()
    dest = {"kind": "dicom", "aet": "DEST", "host": "127.0.0.1", "port": port, "timeout": 5.0, "max_attempts": 5}
    rules = [{"name": "north-ct", "to": ["peer"], "match": {"Modality": "CT"}, "partition": "north"}]
    received = tmp_path / "received"
    with two_hospitals(backend, tmp_path, stable_age=1.0, job_poll_interval=0.1, job_retry_backoff=0.2,
                       job_retry_backoff_max=0.5, routing_destinations={"peer": dest}, routing_rules=rules) \
            as archive, storescp(port, received) as peer:  # fmt: skip
        north = _part(archive, "north")
        with working(archive):
            def cursor() -> bool:
                with archive.engine.connect() as conn:
                    from pacs.routing.models import RoutingCursor

                    return conn.execute(select(RoutingCursor.partition_fk)).scalar_one_or_none() == north.id

            wait_until("the rule's cursor", cursor, timeout=60)
            stored = _twins(archive)

            def forwards() -> list[Any]:
                with archive.engine.connect() as conn:
                    return list(conn.execute(select(RoutingForward)))

            wait_until("north's forwards sent", lambda: len(forwards()) == 3
                       and {f.status for f in forwards()} == {"sent"}, timeout=120)  # fmt: skip
            wait_until("the files", lambda: len(list(received.iterdir())) == 3, timeout=30)
        peer.terminate()
        names = {str(pydicom.dcmread(p, stop_before_pixels=True).PatientName) for p in received.iterdir()}
        assert names == {"North^Patient"}  # south's twin (same UIDs) was never sent
        assert {f.partition_fk for f in forwards()} == {north.id}
        assert {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in received.iterdir()} == {
            str(pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True).SOPInstanceUID) for d in stored["north"]}


# --- retention ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_retention_of_one_partition_never_touches_the_other(backend: str, tmp_path: Path) -> None:
    purge = RetentionRule(name="north-purge", action="delete", age_days=0, age_from="received", grace_days=0,
                          partition="north")  # fmt: skip
    with two_hospitals(backend, tmp_path, retention_rules=[purge]) as archive:
        north, south = _part(archive, "north"), _part(archive, "south")
        ids = {p.slug: p.id for p in archive.partitions.all()}
        _twins(archive)
        # South holds its copy: a hold of south's protects south's study, not north's twin.
        holds.set_hold(archive.engine, Principal.local_admin(), STUDY_UID, "case 17", partition=south.id)
        assert holds.list_holds(archive.engine, north.id) == []
        now = utcnow() + timedelta(seconds=1)
        steps = plan(archive.engine, archive.settings.retention_rules, now, ids)
        assert [(s.kind, s.partition) for s in steps] == [(StepKind.MARK, north.id)]
        first = run(archive.engine, archive.store, archive.settings, now, partitions=ids)
        assert first.counts == {"mark": 1} and not first.errors
        second = run(archive.engine, archive.store, archive.settings, now + timedelta(seconds=1), partitions=ids)
        assert second.counts == {"delete": 1} and not second.errors
        with pytest.raises(NotFound):
            find_instances(archive.engine, AccessScope.everything(north.id), study_uid=STUDY_UID)
        left = find_instances(archive.engine, AccessScope.everything(south.id), study_uid=STUDY_UID)
        assert len(left) == 3
        for inst in left:  # south's objects are all still there and readable
            assert str(_read(archive, south.id, inst.sop_uid).PatientName) == "South^Patient"
        # The trail: the retention actions are north's; south's admins see only south's hold.
        north_trail = audit_query(archive.engine, AuditQuery(partition=north.id))
        assert {e.action for e in north_trail} >= {"delete"} and {e.partition for e in north_trail} == {north.id}
        south_trail = audit_query(archive.engine, AuditQuery(partition=south.id))
        assert [e.action for e in south_trail] == ["legal-hold"]
        assert len(audit_query(archive.engine, AuditQuery())) == len(north_trail) + len(south_trail)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_study_uid_is_held_and_marked_in_each_partition_on_its_own(backend: str, tmp_path: Path) -> None:
    rules = [RetentionRule(name=f"{slug}-purge", action="delete", age_days=0, age_from="received", grace_days=1,
                           partition=slug) for slug in ("north", "south")]  # fmt: skip
    admin = Principal.local_admin()
    with two_hospitals(backend, tmp_path, retention_rules=rules) as archive:
        north, south = _part(archive, "north"), _part(archive, "south")
        ids = {p.slug: p.id for p in archive.partitions.all()}
        _twins(archive)
        # Both hospitals hold their copy of the same UID; each hold (and its reason) is its own.
        holds.set_hold(archive.engine, admin, STUDY_UID, "north case", partition=north.id)
        holds.set_hold(archive.engine, admin, STUDY_UID, "south case", partition=south.id)
        holds.set_hold(archive.engine, admin, STUDY_UID, "north case, amended", partition=north.id)
        assert [h.reason for h in holds.list_holds(archive.engine, north.id)] == ["north case, amended"]
        assert [h.reason for h in holds.list_holds(archive.engine, south.id)] == ["south case"]
        holds.clear_hold(archive.engine, admin, STUDY_UID, partition=north.id)
        with pytest.raises(NotFound):
            holds.clear_hold(archive.engine, admin, STUDY_UID, partition=north.id)
        assert [h.reason for h in holds.list_holds(archive.engine, south.id)] == ["south case"]
        # North's copy is marked; south's stays protected by south's hold.
        now = utcnow() + timedelta(seconds=1)
        first = run(archive.engine, archive.store, archive.settings, now, partitions=ids)
        assert first.counts == {"mark": 1} and not first.errors
        # Once south lifts its hold its twin is marked too, while north's mark of the same UID waits.
        holds.clear_hold(archive.engine, admin, STUDY_UID, partition=south.id)
        second = run(archive.engine, archive.store, archive.settings, now + timedelta(seconds=1), partitions=ids)
        assert second.counts.get("mark") == 1 and "delete" not in second.counts and not second.errors
        with archive.engine.connect() as conn:
            marked = conn.execute(select(DeletionMark.partition_fk).where(DeletionMark.study_uid == STUDY_UID))
            assert sorted(marked.scalars()) == sorted([north.id, south.id])
        third = run(archive.engine, archive.store, archive.settings, now + timedelta(days=2), partitions=ids)
        assert third.counts == {"delete": 2} and not third.errors
        for partition in (north.id, south.id):
            with pytest.raises(NotFound):
                find_instances(archive.engine, AccessScope.everything(partition), study_uid=STUDY_UID)


# --- benchmarks --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_benchmark_of_one_partition_never_sees_the_others_cases(backend: str, tmp_path: Path) -> None:
    cases = make_study_set(6, n_slices=8, rows=32, cols=32, seed=29, modalities=["CT"], lesion_fraction=0.5)
    with two_hospitals(backend, tmp_path, secret_key="benchmark-test-secret-0123456789", benchmark_bootstrap=100,
                       job_poll_interval=0.1, job_retry_backoff=0.1, job_max_attempts=1) as archive:
        north, south = _part(archive, "north"), _part(archive, "south")
        for case in cases:  # the same six studies (same UIDs) in both hospitals
            for ds in case.datasets:
                for slug in ("north", "south"):
                    assert archive.ingest.store_bytes(to_bytes(ds), partition=_part(archive, slug)).ok
        south_only = make_study_set(1, n_slices=4, rows=16, cols=16, seed=31, modalities=["CT"])[0]
        for ds in south_only.datasets:
            assert archive.ingest.store_bytes(to_bytes(ds), partition=south).ok
        service = BenchmarkService(archive, extra_plugins=(RandomPlugin,), use_entry_points=False)
        at_north, at_south = service.in_partition(north.id), service.in_partition(south.id)
        bench = at_north.create(name="north-lesions", task="detection", created_by="north-admin")
        assert bench.partition == north.id
        assert [b.name for b in at_north.benchmarks()] == ["north-lesions"]
        assert at_south.benchmarks() == [] and service.benchmarks() == []
        for other in (at_south, service):
            with pytest.raises(NotFound):
                other.benchmark("north-lesions")
            with pytest.raises(NotFound):
                other.benchmark(bench.id)
        # A query adds north's studies only; south's own study is unknown to north's benchmark.
        added = at_north.add_studies(bench.id, query={"Modality": "CT"}, created_by="north-admin")
        assert added.added == 6
        with pytest.raises(InvalidBenchmarkData):
            at_north.add_studies(bench.id, study_uids=[south_only.study_uid], created_by="north-admin")
        at_north.import_labels(bench.id, lesion_csv(cases), fmt="csv", created_by="north-admin")
        split = at_north.split(bench.id, seed=3, test_fraction=0.5, created_by="north-admin")
        assert split.published == split.version.n_dev and not split.not_published
        # The de-identified dev copies lie in north; nothing was written into south or the default partition.
        _, dev = at_north.dev_split(bench.id)
        for case in dev:
            assert find_instances(archive.engine, AccessScope.everything(north.id), study_uid=case.study_uid)
            for elsewhere in (south.id, 1):
                with pytest.raises(NotFound):
                    find_instances(archive.engine, AccessScope.everything(elsewhere), study_uid=case.study_uid)

        view = at_north.evaluate(bench.id, "test-random", requested_by="north-admin", requester_role="admin")
        worker = Worker(archive, concurrency=2, kinds=KINDS, extra_plugins=(RandomPlugin,), use_entry_points=False)
        worker.start()
        try:
            wait_until("the evaluation", lambda: at_north.evaluation(view.id).finished, timeout=180)
        finally:
            worker.stop()
        done = at_north.evaluation(view.id)
        assert done.status == "done" and done.n_failed == 0, done.error
        with pytest.raises(NotFound):
            at_south.evaluation(view.id)
        jobs = [j for j in job_queue(archive).list_jobs(partition=north.id, limit=1000) if j.kind == CASE_KIND]
        assert len(jobs) == done.n_cases and {j.status for j in jobs} == {JobStatus.SUCCEEDED}
        assert [j for j in job_queue(archive).list_jobs(partition=south.id, limit=1000) if j.kind == CASE_KIND] == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_partitions_each_create_a_benchmark_of_the_same_name(backend: str, tmp_path: Path) -> None:
    with two_hospitals(backend, tmp_path, secret_key="benchmark-test-secret-0123456789") as archive:
        north, south = _part(archive, "north"), _part(archive, "south")
        service = BenchmarkService(archive, extra_plugins=(RandomPlugin,), use_entry_points=False)
        at_north, at_south = service.in_partition(north.id), service.in_partition(south.id)
        mine = at_north.create(name="lesions", task="detection", created_by="north-admin")
        theirs = at_south.create(name="lesions", task="classification", created_by="south-admin")
        assert mine.id != theirs.id and (mine.partition, theirs.partition) == (north.id, south.id)
        assert at_north.benchmark("lesions").id == mine.id and at_north.benchmark("lesions").task == mine.task
        assert at_south.benchmark("lesions").id == theirs.id and at_south.benchmark("lesions").task == theirs.task
        assert [b.id for b in at_north.benchmarks()] == [mine.id]
        assert [b.id for b in at_south.benchmarks()] == [theirs.id]
        with pytest.raises(NotFound):
            service.benchmark("lesions")  # the default partition has none of that name
        with pytest.raises(Conflict):  # within one partition the name is still unique
            at_south.create(name="lesions", task="detection", created_by="south-admin")


# --- the admin API answers in the caller's partition -------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_admin_api_works_in_the_callers_partition(backend: str, tmp_path: Path) -> None:
    with two_hospitals(backend, tmp_path, secret_key="test-secret-key-0123456789") as archive:
        north, south = _part(archive, "north"), _part(archive, "south")
        create_user(archive.engine, "admin", PASSWORD, "admin")
        create_user(archive.engine, "northadmin", PASSWORD, "admin", partition=north.id)
        create_user(archive.engine, "northdoc", PASSWORD, "physician", partition=north.id)
        create_user(archive.engine, "southadmin", PASSWORD, "admin", partition=south.id)
        app = create_app(archive)
        app.state.plugin_service = PluginService(archive, extra_plugins=(EchoPlugin,), use_entry_points=False)
        clients = {}
        for name in ("admin", "northadmin", "northdoc", "southadmin"):
            client = TestClient(app)
            client.headers["Authorization"] = f"Bearer {bearer(client, name)}"
            clients[name] = client

        def enabled(name: str) -> list[bool]:
            answer = clients[name].get("/api/plugins")
            assert answer.status_code == 200, answer.text
            return [p["enabled"] for p in answer.json() if p["name"] == "test-echo"]

        assert enabled("northadmin") == enabled("southadmin") == [False] and enabled("admin") == [True]
        switched = clients["northadmin"].patch("/api/plugins/test-echo/1.0", json={"enabled": True})
        assert switched.status_code == 200 and switched.json()["enabled"] is True
        assert enabled("northdoc") == [True] and enabled("southadmin") == [False] and enabled("admin") == [True]

        made = clients["northadmin"].post("/api/webhooks", json={"url": "http://127.0.0.1:9/hook"})
        assert made.status_code == 201, made.text
        hook = made.json()["id"]
        assert [h["id"] for h in clients["northadmin"].get("/api/webhooks").json()] == [hook]
        for other in ("southadmin", "admin"):  # the default partition's admin works in its own here
            assert clients[other].get("/api/webhooks").json() == []
            assert clients[other].get(f"/api/webhooks/{hook}").status_code == 404
            assert clients[other].delete(f"/api/webhooks/{hook}").status_code == 404
        assert clients["northadmin"].get(f"/api/webhooks/{hook}/deliveries").status_code == 200

        held = clients["southadmin"].put(f"/api/studies/{STUDY_UID}/hold", json={"reason": "case 9"})
        assert held.status_code == 200, held.text
        assert [h["study_uid"] for h in clients["southadmin"].get("/api/retention/holds").json()] == [STUDY_UID]
        assert clients["northadmin"].get("/api/retention/holds").json() == []
        assert clients["northadmin"].delete(f"/api/studies/{STUDY_UID}/hold").status_code == 404

        # The audit trail: each partition's admin reads its own events; the default partition's admin its
        # own too, and another partition's when naming it (?partition=slug), which no other admin may.
        def users(name: str, **params: str) -> set[str]:
            answer = clients[name].get("/api/audit", params={"limit": 10_000, **params})
            assert answer.status_code == 200, answer.text
            return {e["username"] for e in answer.json() if e["username"]}

        assert users("northadmin") <= {"northadmin", "northdoc"} and "northadmin" in users("northadmin")
        assert users("southadmin") == {"southadmin"}
        assert "admin" in users("admin") and not users("admin") & {"northadmin", "southadmin"}
        assert users("admin", partition="north") == users("northadmin")
        assert users("admin", partition="south") == {"southadmin"}
        assert clients["northadmin"].get("/api/audit", params={"partition": "south"}).status_code == 404
        assert clients["admin"].get("/api/audit", params={"partition": "nowhere"}).status_code == 404
