"""The ``lesion-detector`` plugin: focal hyperdense round lesions in CT, as points, diameters and masks."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from ai_plugins.builtin.lesion_detector.pipeline import (
    Calibration,
    Candidate,
    DetectorParams,
    candidate_features,
    detect,
    lesion_mask,
)
from ai_plugins.sdk import (
    Classification,
    Code,
    Finding,
    Findings,
    InputFilter,
    Measurement,
    Plugin,
    Point2D,
    Point3D,
    Segment,
    Segmentation,
    SeriesInput,
    StudyInput,
    VolumeError,
    codes,
)

__all__ = ["LesionDetector"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MASS_DIAMETER_MM = 30.0  # radiological convention: a nodule up to 3 cm, a mass beyond


class LesionDetector(Plugin):
    """Finds focal hyperdense round lesions in a CT volume (see :mod:`.pipeline` for the method)."""

    name: ClassVar[str] = "lesion-detector"
    version: ClassVar[str] = "1.0.0"
    vendor: ClassVar[str] = "cloudfilm"
    description: ClassVar[str] = (
        "Detects focal, round lesions denser than the surrounding soft tissue on CT (multi-scale "
        "blob filtering of the excess-density image, calibrated on synthetic studies) and reports "
        "each with its 3D centre, volume-equivalent diameter, probability and mask."
    )
    intended_use: ClassVar[str] = (
        "Research and demonstration: flags candidate hyperdense lesions for review. Not a medical "
        "device; calibrated on synthetic phantoms only."
    )
    input_filter: ClassVar[InputFilter] = InputFilter(
        modalities=("CT",), sop_classes=(CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE), min_slices=8
    )

    max_findings: ClassVar[int] = 5
    emit_masks: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.params = DetectorParams()
        self.calibration = Calibration.load()
        # candidates at or above the operating point are findings (positive calls); below it, the best
        # located candidate is still reported with its probability, marked ``below_operating_point``
        self.report_threshold = self.calibration.operating_point

    def run(self, study: StudyInput) -> Findings:
        chosen = study.select(self.input_filter)
        if not chosen:
            return Findings(summary="no CT series to analyse")
        for series in chosen:  # most slices first; skip series that are not one volume
            try:
                _ = series.volume
            except VolumeError:
                series.release()
                continue
            return self.analyse(series)
        return Findings(summary="no CT series could be read as a volume")

    def analyse(self, series: SeriesInput) -> Findings:
        """Findings for one CT series."""
        volume = series.volume
        detection = detect(volume.array, volume.spacing, self.params)
        scored = [
            (float(self.calibration.probability(candidate_features(c)[None, :])[0]), c) for c in detection.candidates
        ]
        scored.sort(key=lambda pc: -pc[0])
        study_p = scored[0][0] if scored else 0.0
        reported = [(p, c) for p, c in scored if p >= self.report_threshold][: self.max_findings]
        below = not reported and bool(scored)
        if below:  # a reviewer sees where the study-level probability comes from
            reported = scored[:1]

        findings: list[Finding] = []
        segments: list[Segment] = []
        for n, (p, c) in enumerate(reported, start=1):
            diameter = 2.0 * c.radius_mm
            code = finding_code(diameter)
            label = "Candidate (below operating point)" if below else f"Lesion {n}"
            findings.append(
                Finding(
                    code=code,
                    probability=round(p, 4),
                    label=label,
                    below_operating_point=below,
                    region=self._region(series, c),
                    measurements=[
                        Measurement(name=codes.DIAMETER, value=round(diameter, 1), unit=codes.UCUM_MM),
                        Measurement(
                            name=codes.VOLUME,
                            value=round(math.pi / 6.0 * diameter**3, 0),
                            unit=codes.UCUM_MM3,
                        ),
                    ],
                )
            )
            if self.emit_masks and not below:
                mask = lesion_mask(volume.array, volume.spacing, c, detection.baseline, self.params)
                if mask.any():
                    segments.append(
                        Segment(
                            label=label,
                            category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                            property_type=code,
                            mask=mask,
                        )
                    )
        return Findings(
            evaluated_series=[series.series_uid],
            classifications=[Classification(code=codes.HIGH_DENSITY_LESION, probability=round(study_p, 4))],
            findings=findings,
            segmentations=[Segmentation(series_uid=series.series_uid, segments=segments)] if segments else [],
            summary=(
                f"no hyperdense lesion at the operating point ({self.report_threshold:.2f}); best candidate shown, "
                f"probability {study_p:.2f}"
                if below
                else f"{len(findings)} hyperdense lesion(s); study-level probability {study_p:.2f}"
            ),
        )

    @staticmethod
    def _region(series: SeriesInput, c: Candidate) -> Point3D | Point2D:
        volume = series.volume
        if volume.has_geometry and volume.frame_of_reference_uid:
            x, y, z = (float(v) for v in volume.index_to_patient(c.center_index))
            return Point3D(
                x=round(x, 2), y=round(y, 2), z=round(z, 2), frame_of_reference_uid=volume.frame_of_reference_uid
            )
        k = int(np.clip(round(c.center_index[0]), 0, volume.shape[0] - 1))
        return Point2D(
            sop_instance_uid=volume.sop_instance_uids[k],
            frame_number=volume.frame_numbers[k],
            x=round(c.center_index[2] + 0.5, 2),
            y=round(c.center_index[1] + 0.5, 2),
        )


def finding_code(diameter_mm: float) -> Code:
    """Nodule below 3 cm, mass from 3 cm (the code the plugin reports for a lesion of this size)."""
    return codes.MASS if diameter_mm >= MASS_DIAMETER_MM else codes.NODULE
