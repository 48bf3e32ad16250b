"""``cloudfilm benchmark evaluate --no-wait`` queues the evaluation; ``cloudfilm worker`` runs it."""

from __future__ import annotations

import os
from pathlib import Path

from ai_plugins.benchmarks.service import BenchmarkService
from pacs.archive import Archive
from tests.ai_plugins.benchmarks.conftest import bench_settings, split_benchmark, store_cases
from tests.ai_plugins.benchmarks.plugins import RandomPlugin
from tests.ai_plugins.sample_plugins import write_entry_points
from tests.cli import run_cli
from tests.e2e.test_ai_pipeline import running, wait_for
from tests.factories import CtCase

REPO = Path(__file__).resolve().parents[3]


def test_queued_evaluations_are_run_by_cloudfilm_worker(tmp_path: Path, small_cases: list[CtCase]) -> None:
    settings = bench_settings(tmp_path)
    with Archive.open(settings) as archive:
        store_cases(archive, small_cases)
        split_benchmark(BenchmarkService(archive, use_entry_points=False), small_cases, seed=3)
    ep_dir = write_entry_points(tmp_path / "entry-points", {"test-random": RandomPlugin})
    env = {"CLOUDFILM_DATA_DIR": str(settings.data_dir), "CLOUDFILM_SECRET_KEY": "benchmark-test-secret-0123456789",
           "CLOUDFILM_JOB_POLL_INTERVAL": "0.2", "CLOUDFILM_BENCHMARK_BOOTSTRAP": "200",
           "PYTHONPATH": os.pathsep.join([str(ep_dir), str(REPO)])}  # fmt: skip
    queued = run_cli("benchmark", "evaluate", "lesions", "test-random", "--no-wait", env=env)
    assert queued.returncode == 0, queued.stderr
    evaluation_id = int(queued.stdout.split()[1].rstrip(":"))
    assert "(6 test cases)" in queued.stdout
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")} | env

    def done() -> bool:
        with Archive.open(settings, migrate=False) as archive:
            return BenchmarkService(archive).evaluation(evaluation_id).finished

    log = tmp_path / "worker.log"
    with running(["worker", "--concurrency", "2"], full_env, log):
        wait_for("the worker to run the evaluation", done, 120, log)
    board = run_cli("benchmark", "leaderboard", "lesions", env=env)
    assert board.returncode == 0 and "test-random@1.0" in board.stdout and "froc_mean_sensitivity" in board.stdout
    listed = run_cli("benchmark", "list", env=env)
    assert "lesions" in listed.stdout and "v3 12 studies (6 dev, 6 test)" in listed.stdout
    missing = run_cli("benchmark", "evaluate", "nope", "test-random", env=env)
    assert missing.returncode == 1 and "no benchmark nope" in missing.stderr
