"""Plugin findings as DICOM: TID 1500 Comprehensive 3D SR and SEG, new series in the source study.

:func:`build_result_objects` is what the runner calls after a plugin run: one SR with every
classification and finding, plus one SEG per segmentation, all ready for the ingest service.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from ai_plugins.sdk import BoundingBox, Findings, PluginInfo, Point2D, Polygon, StudyInput
from ai_plugins.sr.seg import SEG_SERIES_NUMBER, build_segmentation
from ai_plugins.sr.tid1500 import (
    MANUFACTURER,
    SR_SERIES_NUMBER,
    build_measurement_report,
    derived_uid,
    read_measurement_report,
)

__all__ = [
    "MANUFACTURER",
    "SEG_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
    "build_measurement_report",
    "build_result_objects",
    "build_segmentation",
    "derived_uid",
    "evidence_for",
    "read_measurement_report",
]


NON_IMAGE_MODALITIES = frozenset({"SR", "SEG", "KO", "PR", "RTSTRUCT", "DOC"})


def evidence_for(findings: Findings, study: StudyInput) -> list[Dataset]:
    """Headers of the evaluated series plus any series holding an image a 2D region refers to."""
    wanted = set(findings.evaluated_series) | {s.series_uid for s in findings.segmentations}
    referenced = {
        f.region.sop_instance_uid for f in findings.findings if isinstance(f.region, Point2D | BoundingBox | Polygon)
    }
    if referenced:
        for series in study.series:
            if series.series_uid not in wanted and referenced & {str(ds.SOPInstanceUID) for ds in series.datasets}:
                wanted.add(series.series_uid)
    if not wanted:  # a plugin that did not say what it looked at: every image series is evidence
        wanted = {s.series_uid for s in study.series if s.modality not in NON_IMAGE_MODALITIES}
    return study.datasets(wanted)


def build_result_objects(
    findings: Findings,
    study: StudyInput,
    plugin: PluginInfo,
    *,
    sr_series_number: int = SR_SERIES_NUMBER,
    seg_series_number: int = SEG_SERIES_NUMBER,
) -> list[Dataset]:
    """The SR (always) and the SEGs (one per segmentation) for one plugin run on ``study``."""
    report = build_measurement_report(findings, evidence_for(findings, study), plugin, series_number=sr_series_number)
    objects: list[Dataset] = [report]
    for n, segmentation in enumerate(findings.segmentations):
        volume = study.get_series(segmentation.series_uid).volume
        objects.append(build_segmentation(segmentation, volume, plugin, series_number=seg_series_number + n))
    return objects
