"""Total evaluation time of one benchmark, an algorithm package sandboxed against the same code
in-process; prints a table.

    .venv/bin/python benchmarks/package_eval_bench.py [--cases 100] [--concurrency 2]

A fresh archive (SQLite + filesystem, in a temporary directory) holds ``cases / 0.8`` synthetic CT
studies (16 slices of 64x64, half with a lesion), split so that ``--cases`` are test cases. The test
package (``tests/ai_plugins/packages/builder.py``: code, weights, a dependency wheel) is uploaded and
admitted, and the same code is loaded in-process from its admitted environment under another name.
Each evaluation runs through the worker (``--concurrency`` threads) from request to scored metrics,
after one untimed in-process evaluation that warms the worker's fork server and the file cache;
the two must score the same numbers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ai_plugins.benchmarks.evaluation import KINDS  # noqa: E402
from ai_plugins.benchmarks.service import BenchmarkService  # noqa: E402
from ai_plugins.packages.service import PackageService, env_dir  # noqa: E402
from ai_plugins.runner.worker import Worker  # noqa: E402
from pacs.archive import Archive  # noqa: E402
from pacs.settings import Settings  # noqa: E402
from tests.ai_plugins.benchmarks.conftest import lesion_csv, store_cases  # noqa: E402
from tests.ai_plugins.packages.builder import package  # noqa: E402
from tests.factories import make_study_set  # noqa: E402

TWIN = "from acme_detector import Detector\n\n\nclass InProcess(Detector):\n    name = 'acme-inprocess'\n"


def _evaluate(archive: Archive, service: BenchmarkService, plugin: str, concurrency: int,
              extra: tuple[type, ...]) -> tuple[float, dict[str, object]]:  # fmt: skip
    started = time.monotonic()
    view = service.evaluate("lesions", plugin, requested_by="admin", requester_role="admin", force=True)
    worker = Worker(archive, concurrency=concurrency, kinds=KINDS, extra_plugins=extra, use_entry_points=False)
    worker.start()
    try:
        while not service.evaluation(view.id).finished:
            time.sleep(0.2)
    finally:
        worker.stop()
    done = service.evaluation(view.id)
    assert done.status == "done" and done.n_failed == 0, done
    return time.monotonic() - started, done.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    n_studies = round(args.cases / 0.8)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", secret_key="bench-secret-0123456789abcdef",  # type: ignore[arg-type]
                            benchmark_bootstrap=200, job_poll_interval=0.1, benchmark_evals_per_day=10)
        with Archive.open(settings) as archive:
            cases = make_study_set(n_studies, n_slices=16, rows=64, cols=64, seed=3, modalities=["CT"],
                                   lesion_fraction=0.5)  # fmt: skip
            store_cases(archive, cases)
            packages = PackageService(archive)
            digest = packages.upload(package(), filename="acme.zip", uploaded_by="admin")[0].digest
            packages.admit("acme-detector", "1.0", admitted_by="admin")
            twin_dir = Path(tmp) / "twin"
            twin_dir.mkdir()
            (twin_dir / "acme_twin.py").write_text(TWIN)
            sys.path[:0] = [str(env_dir(settings, digest)), str(twin_dir)]  # before the first child process
            from acme_twin import InProcess  # type: ignore[import-not-found]

            service = BenchmarkService(archive, extra_plugins=(InProcess,), use_entry_points=False)
            bench = service.create(name="lesions", task="detection", created_by="admin")
            service.add_studies(bench.id, study_uids=[c.study_uid for c in cases], created_by="admin")
            service.import_labels(bench.id, lesion_csv(cases), fmt="csv", created_by="admin")
            service.split(bench.id, seed=1, test_fraction=0.8, created_by="admin")
            n_test = len([c for c in service.cases(bench.id)[1] if c.split == "test"])
            _evaluate(archive, service, "acme-inprocess", args.concurrency, (InProcess,))  # warm-up, not counted
            sandboxed, b = _evaluate(archive, service, "acme-detector", args.concurrency, (InProcess,))
            in_process, a = _evaluate(archive, service, "acme-inprocess", args.concurrency, (InProcess,))
    assert a == b, "the sandboxed package scored other numbers than the same code in-process"
    print(f"{n_test} test cases, {args.concurrency} worker threads  {'total s':>8}  {'per case s':>10}")
    for name, seconds in (("in-process (child process)", in_process), ("sandboxed package", sandboxed)):
        print(f"{name:42} {seconds:8.1f}  {seconds / n_test:10.2f}")
    print(f"{'ratio sandboxed / in-process':42} {sandboxed / in_process:8.2f}")


if __name__ == "__main__":
    main()
