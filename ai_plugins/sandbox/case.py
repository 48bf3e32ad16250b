"""The one case a sandboxed package sees: the instances of the series its input filter accepts,
written as Part 10 files into a fresh directory that is mounted read-only at ``/case``.

The study comes from any :class:`~ai_plugins.sdk.InstanceSource`: the archive's index and store on
its own workers, DICOMweb on an edge worker; the case is the same either way.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ai_plugins.runner.routing import accepted_series
from ai_plugins.sdk import InputFilter, InstanceSource


class NothingToRun(Exception):
    """The package accepts no series of the study."""


@contextlib.contextmanager
def case_directory(source: InstanceSource, input_filter: InputFilter) -> Iterator[Path]:
    """A temporary directory holding the accepted series of ``source``'s study (deleted afterwards)."""
    chosen = accepted_series(input_filter, source.list_series())
    if not chosen:
        raise NothingToRun("the package accepts no series of this study")
    root = Path(tempfile.mkdtemp(prefix="cloudfilm-case-"))
    try:
        for s, series in enumerate(chosen):
            for i, blob in enumerate(source.read_instances(series.series_uid)):
                (root / f"{s:03d}-{i:05d}.dcm").write_bytes(blob)
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
