"""The one worker: jobs of every kind claimed by the same threads and dispatched to their handler;
a handler that raises costs its job an attempt, never the thread; an evaluation always ends."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_plugins.benchmarks import runner as benchmark_runner
from ai_plugins.benchmarks.evaluation import CASE_KIND, KINDS
from ai_plugins.benchmarks.service import BenchmarkService
from ai_plugins.runner.handler import Done, Lease, job_queue
from ai_plugins.runner.rejection_jobs import JOB_KIND as REJECT_PURGE_KIND
from ai_plugins.runner.routing import JOB_KIND
from ai_plugins.runner.service import PluginService
from ai_plugins.runner.worker import Worker
from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.jobs import ClaimedJob, JobSpec, JobStatus, dedupe_key
from pacs.notify.outbox import JOB_KIND as NOTIFY_KIND
from pacs.retention.schedule import JOB_KIND as RETENTION_KIND
from pacs.routing.dispatch import JOB_KIND as FORWARD_KIND
from pacs.webhooks.dispatch import JOB_KIND as WEBHOOK_KIND
from tests.ai_plugins.benchmarks.conftest import bench_settings, split_benchmark, store_cases
from tests.ai_plugins.benchmarks.plugins import RandomPlugin
from tests.ai_plugins.sample_plugins import EchoPlugin
from tests.factories import make_study_set
from tests.pg import temporary_database

PLUGINS = (EchoPlugin, RandomPlugin)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    """Six small CT studies (a benchmark's worth) that never become stable by themselves."""
    with contextlib.ExitStack() as stack:
        overrides: dict[str, object] = {"stable_age": 3600.0, "job_max_attempts": 1}
        if request.param == "postgres":
            overrides["database_url"] = stack.enter_context(temporary_database())
        opened = stack.enter_context(Archive.open(bench_settings(tmp_path, **overrides)))
        yield opened


def wait_until(what: str, check: Callable[[], Any], timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout  # generous: a loaded 2-core machine forks slowly
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_one_worker_of_concurrency_one_runs_a_plugin_job_and_a_benchmark_case(archive: Archive) -> None:
    cases = make_study_set(6, n_slices=8, rows=32, cols=32, seed=31, modalities=["CT"], lesion_fraction=0.5)
    store_cases(archive, cases)
    benchmarks = BenchmarkService(archive, extra_plugins=PLUGINS, use_entry_points=False)
    bench = split_benchmark(benchmarks, cases, seed=5)
    evaluation = benchmarks.evaluate(bench, "test-random", requested_by="admin", requester_role="admin")
    plugins = PluginService(archive, extra_plugins=PLUGINS, use_entry_points=False)
    clinical, _ = plugins.rerun(cases[0].study_uid, "test-echo", version=None, requested_by="dr",
                                scope=AccessScope.everything())  # fmt: skip
    worker = Worker(archive, concurrency=1, extra_plugins=PLUGINS, use_entry_points=False)
    assert set(worker.handlers) == {JOB_KIND, *KINDS, WEBHOOK_KIND, FORWARD_KIND, NOTIFY_KIND, RETENTION_KIND,
                                    REJECT_PURGE_KIND}
    worker.start()
    try:
        wait_until("the evaluation", lambda: benchmarks.evaluation(evaluation.id).finished)
        done = wait_until("the plugin job", lambda: plugins.job(clinical.id).status is JobStatus.SUCCEEDED)
    finally:
        worker.stop()
    assert done
    view = benchmarks.evaluation(evaluation.id)
    assert view.status == "done" and view.n_failed == 0 and view.n_done == view.n_cases == 3
    assert [r.kind for r in plugins.results(cases[0].study_uid)] == ["SR", "SEG"]
    case_jobs = job_queue(archive).list_jobs(kind=CASE_KIND)
    assert {j.status for j in case_jobs} == {JobStatus.SUCCEEDED}
    # one thread ran them all; the clinical job, queued after the evaluation, waited for one case only
    ran = plugins.job(clinical.id)
    assert ran.started_at is not None and all(j.started_at is not None for j in case_jobs)
    assert sorted(j.started_at < ran.started_at for j in case_jobs) == [False, False, True]


class Flaky:
    """A handler whose every other job raises, and whose housekeeping always raises."""

    kinds = ("test-flaky",)

    def __init__(self) -> None:
        self.housekept = 0
        self.threads: set[str] = set()

    def execute(self, job: ClaimedJob, lease: Lease) -> Done:
        self.threads.add(threading.current_thread().name)
        if job.payload["n"] % 2 == 0:
            raise RuntimeError(f"synthetic failure of job {job.payload['n']}")
        return Done({"n": job.payload["n"]})

    def housekeep(self) -> bool:
        self.housekept += 1
        raise ConnectionError("the database went away")


def test_a_handler_that_raises_does_not_kill_its_thread(archive: Archive) -> None:
    queue = job_queue(archive)
    ids = [queue.enqueue(JobSpec(kind="test-flaky", dedupe_key=dedupe_key("flaky", n), payload={"n": n},
                                 max_attempts=1)) for n in range(4)]  # fmt: skip
    flaky = Flaky()
    worker = Worker(archive, concurrency=1, kinds=["test-flaky"], handlers=[flaky], use_entry_points=False)
    worker.start()
    try:
        wait_until("every job to end", lambda: all(queue.get(i).finished_at for i in ids if i is not None), 60)
        wait_until("housekeeping to go on", lambda: flaky.housekept >= 3, 60)
    finally:
        worker.stop()
    jobs = [queue.get(i) for i in ids if i is not None]
    assert [j.status for j in jobs] == [JobStatus.FAILED, JobStatus.SUCCEEDED] * 2
    assert [j.error for j in jobs[::2]] == ["RuntimeError: synthetic failure of job 0",
                                            "RuntimeError: synthetic failure of job 2"]  # fmt: skip
    assert jobs[3].result == {"n": 3} and flaky.threads == {"ai-job-0"}


def test_an_evaluation_whose_scoring_keeps_failing_ends_failed_with_the_reason(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = make_study_set(6, n_slices=8, rows=32, cols=32, seed=32, modalities=["CT"], lesion_fraction=0.5)
    store_cases(archive, cases)
    benchmarks = BenchmarkService(archive, extra_plugins=PLUGINS, use_entry_points=False)
    bench = split_benchmark(benchmarks, cases, seed=5)
    evaluation = benchmarks.evaluate(bench, "test-random", requested_by="admin", requester_role="admin")

    def score(*_: object, **__: object) -> None:
        raise ConnectionError("the database went away while scoring")

    monkeypatch.setattr(benchmark_runner, "score", score)
    worker = Worker(archive, concurrency=1, kinds=KINDS, extra_plugins=PLUGINS, use_entry_points=False)
    worker.start()
    try:
        view = wait_until("the evaluation to end", lambda: (v := benchmarks.evaluation(evaluation.id)).finished and v)
    finally:
        worker.stop()
    assert view.status == "failed" and view.n_done == 3
    assert view.error == "scoring failed: ConnectionError: the database went away while scoring"
