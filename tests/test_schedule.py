"""The suite's module order (tests/schedule.py): longest modules first, modules kept whole."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.schedule import durations_from_junit, load_durations, longest_first


@dataclass
class _Item:
    nodeid: str


def _order(nodeids: list[str], durations: dict[str, float]) -> list[str]:
    items = [_Item(n) for n in nodeids]
    longest_first(items, durations)  # type: ignore[arg-type]
    return [i.nodeid for i in items]


def test_longest_module_first_and_modules_kept_whole() -> None:
    nodeids = [
        "tests/a.py::t1",
        "tests/b.py::t1",
        "tests/a.py::t2",
        "tests/c.py::t1",
        "tests/b.py::t2",
    ]
    assert _order(nodeids, {"tests/a.py": 1.0, "tests/b.py": 30.0, "tests/c.py": 5.0}) == [
        "tests/b.py::t1",
        "tests/b.py::t2",
        "tests/c.py::t1",
        "tests/a.py::t1",
        "tests/a.py::t2",
    ]


def test_unknown_module_gets_the_median_and_ties_keep_collection_order() -> None:
    nodeids = ["tests/new.py::t", "tests/a.py::t", "tests/b.py::t", "tests/c.py::t"]
    order = _order(nodeids, {"tests/a.py": 1.0, "tests/b.py": 10.0, "tests/c.py": 100.0})
    assert order == ["tests/c.py::t", "tests/new.py::t", "tests/b.py::t", "tests/a.py::t"]
    # No durations at all: collection order, untouched.
    assert _order(nodeids, {}) == nodeids


def test_durations_from_junit_sum_per_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tests" / "pkg").mkdir(parents=True)
    (tmp_path / "tests" / "pkg" / "test_x.py").write_text("")
    (tmp_path / "tests" / "test_y.py").write_text("")
    report = tmp_path / "report.xml"
    report.write_text(
        "<testsuites><testsuite>"
        '<testcase classname="tests.pkg.test_x" name="a" time="1.25"/>'
        '<testcase classname="tests.pkg.test_x.TestGroup" name="b" time="2.5"/>'
        '<testcase classname="tests.test_y" name="c" time="0.4"/>'
        "</testsuite></testsuites>"
    )
    monkeypatch.chdir(tmp_path)
    assert durations_from_junit(report) == {"tests/pkg/test_x.py": 3.8, "tests/test_y.py": 0.4}


def test_committed_durations_name_existing_modules() -> None:
    durations = load_durations()
    root = Path(__file__).resolve().parent.parent
    missing = [module for module in durations if not (root / module).is_file()]
    assert not missing, f"tests/durations.json names modules that are gone: {missing}"
