"""Fixtures for the benchmark tests: an archive (SQLite + filesystem) holding small lesion studies."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ai_plugins.benchmarks.service import BenchmarkService
from pacs.archive import Archive
from pacs.settings import Settings
from tests.factories import CtCase, make_study_set, to_bytes


def bench_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"data_dir": tmp_path / "data", "http_port": 0, "dicom_port": 0,
                                 "secret_key": "benchmark-test-secret-0123456789", "benchmark_bootstrap": 300,
                                 "job_poll_interval": 0.1, "job_retry_backoff": 0.1}  # fmt: skip
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def store_cases(archive: Archive, cases: Sequence[CtCase]) -> None:
    for case in cases:
        for ds in case.datasets:
            result = archive.ingest.store_bytes(to_bytes(ds))
            assert result.ok, result.reason


def lesion_csv(cases: Sequence[CtCase]) -> str:
    """Detection labels as a user uploads them: one row per lesion, empty coordinates for a normal study."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["study_uid", "x_mm", "y_mm", "z_mm", "radius_mm"])
    for case in cases:
        if case.lesion is None:
            writer.writerow([case.study_uid, "", "", "", ""])
        else:
            writer.writerow([case.study_uid, *case.lesion.center_mm, case.lesion.radius_mm])
    return buf.getvalue()


def split_benchmark(service: BenchmarkService, cases: Sequence[CtCase], *, seed: int) -> int:
    """A detection benchmark of ``cases`` with their lesion labels, split half dev / half test; its id."""
    bench = service.create(name="lesions", task="detection", created_by="admin")
    service.add_studies(bench.id, study_uids=[c.study_uid for c in cases], created_by="admin")
    service.import_labels(bench.id, lesion_csv(cases), fmt="csv", created_by="admin")
    service.split(bench.id, seed=seed, test_fraction=0.5, created_by="admin")
    return bench.id


@pytest.fixture(scope="module")
def small_cases() -> list[CtCase]:
    """Twelve CT studies (48 px, 12 slices), about half with a lesion."""
    return make_study_set(12, n_slices=12, rows=48, cols=48, seed=21, modalities=["CT"], lesion_fraction=0.5)


@pytest.fixture
def bench_archive(tmp_path: Path, small_cases: list[CtCase]) -> Iterator[Archive]:
    with Archive.open(bench_settings(tmp_path)) as archive:
        store_cases(archive, small_cases)
        yield archive
