"""Plugins for the benchmark tests: a deliberately random one (reproducible per study), and one that fails.

They are registered through the runner's registry hook (``extra_plugins=…``) in-process, or as
test entry points (``tests.ai_plugins.sample_plugins.write_entry_points``) for ``cloudfilm``
subprocesses.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

import numpy as np

from ai_plugins.sdk import Classification, Finding, Findings, InputFilter, Plugin, Point3D, StudyInput, codes

CT = InputFilter(modalities=("CT",), min_slices=2)


class RandomPlugin(Plugin):
    """Random study scores and random lesion points, seeded by the study: no skill, same answer every run."""

    name: ClassVar[str] = "test-random"
    version: ClassVar[str] = "1.0"
    vendor: ClassVar[str] = "cloudfilm tests"
    input_filter: ClassVar[InputFilter] = CT

    def run(self, study: StudyInput) -> Findings:
        rng = np.random.default_rng(int(hashlib.sha256(study.study_uid.encode()).hexdigest()[:12], 16))
        series = study.select(self.input_filter)[0]
        frame_of_reference = str(series.datasets[0].FrameOfReferenceUID)
        findings = [
            Finding(code=codes.NODULE, probability=round(float(rng.random()), 4), label=f"Lesion {n}",
                    region=Point3D(x=round(float(rng.uniform(-140, 140)), 2), y=round(float(rng.uniform(-100, 100)), 2),
                                   z=round(float(rng.uniform(-35, 35)), 2), frame_of_reference_uid=frame_of_reference))
            for n in range(1, 3)
        ]  # fmt: skip
        return Findings(evaluated_series=[series.series_uid],
                        classifications=[Classification(code=codes.HIGH_DENSITY_LESION,
                                                         probability=round(float(rng.random()), 4))],
                        findings=findings, summary="random")  # fmt: skip


class FailingPlugin(Plugin):
    name: ClassVar[str] = "test-fails"
    version: ClassVar[str] = "1.0"
    vendor: ClassVar[str] = "cloudfilm tests"
    input_filter: ClassVar[InputFilter] = CT

    def run(self, study: StudyInput) -> Findings:
        raise RuntimeError("synthetic failure on a benchmark case")
