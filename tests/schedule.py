"""The order the suite's test modules are handed to the pytest-xdist workers: longest first.

`make unit` runs the suite on two workers with ``--dist loadfile`` (a module per worker at a time,
its module-scoped fixtures built once). Handed out in collection order, one of the longest modules
(the C-MOVE/C-GET stress test, the browser suites, the multi-node tests) could start last and keep
one worker busy for minutes after the other has finished. Handed out longest first, the short
modules fill in at the end and both workers finish close together.

``tests/durations.json`` maps each module to the seconds it took in a full run (all its tests,
setup and teardown included). It is written from a run's JUnit XML report by
``python -m tests.schedule REPORT.xml`` and committed; a module it does not name (a new one) is
given the median, so it still runs in a sensible place, and the order stays a pure function of the
file. Nothing here changes which tests run, only their order; with ``--no-loadscope-reorder`` xdist
keeps that order (by default it would sort modules by their number of tests)."""

from __future__ import annotations

import json
import statistics
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")


def load_durations(path: Path = DURATIONS) -> dict[str, float]:
    """Module path (``tests/…/test_x.py``) → seconds; empty when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def module_of(item: pytest.Item) -> str:
    """The test module an item belongs to, as a path relative to the repository root."""
    return item.nodeid.split("::", 1)[0]


def longest_first(items: list[pytest.Item], durations: dict[str, float]) -> None:
    """Reorder ``items`` in place: whole modules, longest first; ties and items inside a module keep
    their collection order."""
    default = statistics.median(durations.values()) if durations else 0.0
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(module_of(item), index)
    items.sort(
        key=lambda item: (
            -durations.get(module_of(item), default),
            first_seen[module_of(item)],
        )
    )


def durations_from_junit(report: Path) -> dict[str, float]:
    """Seconds per module from a JUnit XML report (pytest's ``--junitxml``)."""
    totals: dict[str, float] = defaultdict(float)
    for case in ET.parse(report).getroot().iter("testcase"):
        classname = case.get("classname", "")
        parts = classname.split(".")
        # pytest writes classname as the dotted module path, plus a class name when there is one.
        for cut in range(len(parts), 0, -1):
            candidate = Path(*parts[:cut]).with_suffix(".py")
            if candidate.exists():
                totals[candidate.as_posix()] += float(case.get("time", "0") or 0)
                break
    return {module: round(seconds, 1) for module, seconds in sorted(totals.items())}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.schedule REPORT.xml  (writes tests/durations.json)", file=sys.stderr)
        return 2
    durations = durations_from_junit(Path(argv[0]))
    if not durations:
        print(f"no test cases with a module found in {argv[0]}", file=sys.stderr)
        return 1
    DURATIONS.write_text(json.dumps(durations, indent=1, sort_keys=True) + "\n")
    print(f"{len(durations)} modules, {sum(durations.values()):.0f} s in all -> {DURATIONS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
