"""A measuring phantom for the viewer's tools: known spacing, a 100 HU disk, three orientations.

One CT study of five series, three 128×128 slices each, stored unsigned with RescaleIntercept
-1024: background 0 HU, a disk of radius 20 px and 100 HU centred on pixel (64, 64) (its centre
is the corner shared by pixels 63 and 64). Series 1–3 are axial, coronal and sagittal with
PixelSpacing 0.5 mm; series 4 has only ImagerPixelSpacing 0.5 mm; series 5 has no spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from tests.factories import PatientSpec, make_ct_study

SIZE = 128
SPACING = 0.5
DISK_HU = 100
DISK_RADIUS_PX = 20
CENTRE_PX = 64.0
INTERCEPT = -1024
ORIENTATIONS = {
    "axial": ["1", "0", "0", "0", "1", "0"],
    "coronal": ["1", "0", "0", "0", "0", "-1"],
    "sagittal": ["0", "1", "0", "0", "0", "-1"],
}
PATIENT = PatientSpec("Phantom^Measuring", "CF-PHANTOM", "19800101", "O")


@dataclass(frozen=True)
class Phantom:
    datasets: list[Dataset]
    series: dict[str, str]  # role -> SeriesInstanceUID: axial, coronal, sagittal, detector, uncalibrated

    @property
    def study_uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)


def disk_pixels() -> np.ndarray:
    """Stored values: 1024 (0 HU) with a 1124 (100 HU) disk, pixel centres inside the circle."""
    centres = np.arange(SIZE) + 0.5
    inside = (centres[None, :] - CENTRE_PX) ** 2 + (centres[:, None] - CENTRE_PX) ** 2 <= DISK_RADIUS_PX**2
    return np.where(inside, DISK_HU - INTERCEPT, -INTERCEPT).astype("<u2")


def make_phantom() -> Phantom:
    roles = ["axial", "coronal", "sagittal", "detector", "uncalibrated"]
    datasets = make_ct_study(PATIENT, n_slices=3, rows=SIZE, cols=SIZE, series_count=len(roles), seed=1401,
                             study_description="MEASURING PHANTOM", slice_thickness=2.5)
    pixels = disk_pixels().tobytes()
    series: dict[str, str] = {}
    for ds in datasets:
        role = roles[int(ds.SeriesNumber) - 1]
        series[role] = str(ds.SeriesInstanceUID)
        ds.SeriesDescription = f"Phantom {role}"
        ds.ImageOrientationPatient = ORIENTATIONS.get(role, ORIENTATIONS["axial"])
        ds.PixelSpacing = [str(SPACING), str(SPACING)]
        ds.RescaleIntercept = str(INTERCEPT)
        ds.RescaleSlope = "1"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        del ds.WindowCenterWidthExplanation
        if role == "detector":
            ds.ImagerPixelSpacing = [str(SPACING), str(SPACING)]
            del ds.PixelSpacing
        elif role == "uncalibrated":
            del ds.PixelSpacing
        ds.PixelData = pixels
    return Phantom(datasets, series)


SEG_RED_LAB = (53.24, 80.09, 67.20)  # CIELab of sRGB (255, 0, 0)
SEG_SQUARE = (10, 30)  # rows and columns [10, 30) of the axial middle slice: segment 1


def make_phantom_seg(phantom: Phantom) -> Dataset:
    """A binary SEG (highdicom) over the axial series: segment 1 "Lesion" (recommended colour red) a
    20×20 square on the middle slice only, segment 2 "Tissue" (no colour: a palette one) a square
    at rows and columns [90, 110) on every slice."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    axial = sorted((d for d in phantom.datasets if str(d.SeriesInstanceUID) == phantom.series["axial"]),
                   key=lambda d: int(d.InstanceNumber))
    mask = np.zeros((len(axial), SIZE, SIZE, 2), dtype=bool)
    lo, hi = SEG_SQUARE
    mask[len(axial) // 2, lo:hi, lo:hi, 0] = True
    mask[:, 90:110, 90:110, 1] = True
    segments = [
        hd.seg.SegmentDescription(1, "Lesion", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm,
                                  hd.seg.SegmentAlgorithmTypeValues.MANUAL,
                                  display_color=hd.color.CIELabColor(*SEG_RED_LAB)),
        hd.seg.SegmentDescription(2, "Tissue", codes.SCT.Tissue, codes.SCT.Tissue,
                                  hd.seg.SegmentAlgorithmTypeValues.MANUAL),
    ]
    return hd.seg.Segmentation(
        source_images=axial, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments, series_instance_uid=hd.UID(), series_number=90,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="cloudfilm tests",
        manufacturer_model_name="phantom", software_versions="1", device_serial_number="1",
        series_description="Phantom SEG",
    )


def make_partial_series(phantom: Phantom) -> list[Dataset]:
    """The axial series again as series 6 without its highest slice: the same positions at other
    slice indices, and one position it does not have (for position-synchronised scrolling)."""
    import copy

    from pydicom.uid import generate_uid

    axial = sorted((d for d in phantom.datasets if str(d.SeriesInstanceUID) == phantom.series["axial"]),
                   key=lambda d: float(d.ImagePositionPatient[2]))[:-1]
    series_uid = generate_uid()
    out = []
    for k, ds in enumerate(axial, start=1):
        twin = copy.deepcopy(ds)
        twin.SeriesInstanceUID = series_uid
        twin.SOPInstanceUID = generate_uid()
        twin.file_meta.MediaStorageSOPInstanceUID = twin.SOPInstanceUID
        twin.SeriesNumber = 6
        twin.SeriesDescription = "Phantom axial partial"
        twin.InstanceNumber = k
        out.append(twin)
    return out
