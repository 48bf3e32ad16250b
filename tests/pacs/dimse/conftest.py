"""Fixtures for the DIMSE tests: a real listener on a free loopback port, DCMTK and pynetdicom peers."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from pacs.settings import Settings
from tests.conftest import archive_settings
from tests.factories import PATIENTS, make_ct_study, write_files
from tests.pacs.dimse.support import Node, dicom_settings, running


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start a listener on SQLite + filesystem with settings overrides; stopped after the test."""
    stack = contextlib.ExitStack()
    counter = itertools.count()

    def make(**overrides: Any) -> Node:
        base = Settings(data_dir=tmp_path / f"data{next(counter)}", http_port=0)
        return stack.enter_context(running(dicom_settings(base, **overrides)))

    with stack:
        yield make


@pytest.fixture
def node(make_node: Callable[..., Node]) -> Node:
    """A listener on the embedded default (SQLite + filesystem)."""
    return make_node()


CORE_BACKENDS = ["sqlite-fs", pytest.param("postgres-s3", marks=[pytest.mark.postgres, pytest.mark.s3])]


@pytest.fixture(params=CORE_BACKENDS)
def any_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    """A listener on each archive backend in turn (SQLite + filesystem, PostgreSQL + S3)."""
    for base in archive_settings(str(request.param), tmp_path, request):
        with running(dicom_settings(base)) as started:
            yield started


@pytest.fixture(scope="session")
def small_study() -> list[Dataset]:
    """Two series of six 64x64 CT slices, one patient with a non-ASCII name."""
    return make_ct_study(PATIENTS[1], n_slices=6, rows=64, cols=64, series_count=2, seed=31)


@pytest.fixture
def study_files(small_study: list[Dataset], tmp_path: Path) -> list[Path]:
    return write_files(small_study, tmp_path / "study")
