"""Small plugins for the runner tests: ones that report, one that raises, one that hangs, one that is slow.

They are registered either directly (``PluginRegistry(extra=…)``) or through a test-only entry
point (:func:`write_entry_points`) when the test runs ``cloudfilm serve``/``worker`` in a subprocess.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

from ai_plugins.sdk import (
    Classification,
    Finding,
    Findings,
    InputFilter,
    Measurement,
    Plugin,
    Point2D,
    Point3D,
    Segment,
    Segmentation,
    StudyInput,
    codes,
)

CT_FILTER = InputFilter(modalities=("CT",), min_slices=2)
MARKER_DIR_ENV = "CLOUDFILM_TEST_MARKER_DIR"
SLOW_SECONDS_ENV = "CLOUDFILM_TEST_SLOW_SECONDS"


def report(study: StudyInput, input_filter: InputFilter) -> Findings:
    """Findings that exercise the SR and the SEG: a classification, a 2D point on the middle slice, a 3D
    point, a diameter, and a cube-shaped mask around the volume's centre."""
    series = study.select(input_filter)[0]
    volume = series.volume  # reads the pixels through the archive
    middle = volume.shape[0] // 2
    centre = [volume.origin[i] + volume.normal[i] * (volume.positions[middle] - volume.positions[0]) for i in range(3)]
    mask = np.zeros(volume.shape, dtype=bool)
    z, y, x = (n // 2 for n in volume.shape)
    mask[max(0, z - 1) : z + 1, y - 2 : y + 2, x - 2 : x + 2] = True
    return Findings(
        evaluated_series=[series.series_uid],
        classifications=[Classification(code=codes.HIGH_DENSITY_LESION, probability=0.9)],
        findings=[
            Finding(
                code=codes.NODULE,
                probability=0.8,
                label="Lesion 1",
                region=Point2D(sop_instance_uid=volume.sop_instance_uids[middle], x=volume.shape[2] / 2,
                               y=volume.shape[1] / 2),
                measurements=[Measurement(name=codes.DIAMETER, value=12.5, unit=codes.UCUM_MM)],
            ),
            Finding(
                code=codes.MASS,
                probability=0.6,
                label="Lesion 2",
                region=Point3D(x=centre[0], y=centre[1], z=centre[2],
                               frame_of_reference_uid=str(volume.frame_of_reference_uid)),
            ),
        ],
        segmentations=[
            Segmentation(
                series_uid=series.series_uid,
                segments=[Segment(label="Lesion 1", category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                                  property_type=codes.LESION, mask=mask)],
            )
        ],
        summary=f"mean {float(volume.array.mean()):.1f}",
    )  # fmt: skip


class EchoPlugin(Plugin):
    """Reads the CT volume and reports two fixed findings on it."""

    name: ClassVar[str] = "test-echo"
    version: ClassVar[str] = "1.0"
    vendor: ClassVar[str] = "cloudfilm tests"
    input_filter: ClassVar[InputFilter] = CT_FILTER

    def run(self, study: StudyInput) -> Findings:
        return report(study, self.input_filter)


class EchoPluginV2(EchoPlugin):
    """A newer release of :class:`EchoPlugin` (installing it supersedes 1.0)."""

    version: ClassVar[str] = "2.0"


class ReportReaderPlugin(Plugin):
    """Reads the CT volume and the study's SRs (prior reports), so its own SR would be input if it were
    not known as plugin output."""

    name: ClassVar[str] = "test-reads-reports"
    version: ClassVar[str] = "1.0"
    vendor: ClassVar[str] = "cloudfilm tests"
    input_filter: ClassVar[InputFilter] = InputFilter(modalities=("CT", "SR"))

    def run(self, study: StudyInput) -> Findings:
        return report(study, self.input_filter)


class MrOnlyPlugin(Plugin):
    """Wants MR: never routed to the CT test studies."""

    name: ClassVar[str] = "test-mr-only"
    version: ClassVar[str] = "1.0"
    vendor: ClassVar[str] = "cloudfilm tests"
    input_filter: ClassVar[InputFilter] = InputFilter(modalities=("MR",))

    def run(self, study: StudyInput) -> Findings:
        return Findings()


class RaisingPlugin(Plugin):
    name: ClassVar[str] = "test-raises"
    version: ClassVar[str] = "1.0"
    vendor: ClassVar[str] = "cloudfilm tests"
    input_filter: ClassVar[InputFilter] = CT_FILTER

    def run(self, study: StudyInput) -> Findings:
        raise ValueError("synthetic failure in the plugin")


class HangingPlugin(Plugin):
    name: ClassVar[str] = "test-hangs"
    version: ClassVar[str] = "1.0"
    vendor: ClassVar[str] = "cloudfilm tests"
    input_filter: ClassVar[InputFilter] = CT_FILTER
    timeout_s: ClassVar[float] = 1.5

    def run(self, study: StudyInput) -> Findings:
        time.sleep(3600)
        return Findings()


class SlowPlugin(Plugin):
    """Leaves a marker file per attempt, then takes ``CLOUDFILM_TEST_SLOW_SECONDS`` before reporting."""

    name: ClassVar[str] = "test-slow"
    version: ClassVar[str] = "1.0"
    vendor: ClassVar[str] = "cloudfilm tests"
    input_filter: ClassVar[InputFilter] = CT_FILTER

    def run(self, study: StudyInput) -> Findings:
        marker_dir = os.environ.get(MARKER_DIR_ENV)
        if marker_dir:
            Path(marker_dir, f"attempt-{os.getpid()}").write_text(study.study_uid)
        time.sleep(float(os.environ.get(SLOW_SECONDS_ENV, "3")))
        return report(study, self.input_filter)


def write_entry_points(directory: Path, plugins: dict[str, type[Plugin]]) -> Path:
    """A ``*.dist-info`` in ``directory`` whose ``cloudfilm.plugins`` entry points name ``plugins``.

    Put ``directory`` on ``PYTHONPATH`` of a ``cloudfilm`` subprocess and importlib.metadata finds them.
    """
    dist = directory / "cloudfilm_test_plugins-1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cloudfilm-test-plugins\nVersion: 1.0\n")
    lines = ["[cloudfilm.plugins]"] + [f"{name} = {cls.__module__}:{cls.__qualname__}" for name, cls in plugins.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return directory
