"""Synthetic DICOM test data: CT/MR studies with known lesions, colour and multi-frame images.

Every test suite and benchmark builds its data here; nothing is downloaded. All output is
deterministic: the same seed and arguments give the same UIDs and the same pixels, because UIDs
are "2.25." + a name-based (version 5) UUID of the arguments (PS3.5 B.2) and pixels come from a
seeded ``numpy.random.Generator``. (``generate_uid(prefix=None, entropy_srcs=...)`` would not do:
pydicom ignores ``entropy_srcs`` when ``prefix`` is ``None`` and returns a random UUID.)
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pydicom.valuerep import format_number_as_ds

__all__ = [
    "CT_IMAGE_STORAGE",
    "ENCODABLE_TRANSFER_SYNTAXES",
    "IMPLEMENTATION_CLASS_UID",
    "JPEG_LOSSLESS_P14",
    "LOSSLESS_TRANSFER_SYNTAXES",
    "MR_IMAGE_STORAGE",
    "MULTIFRAME_GRAY_WORD_SC_STORAGE",
    "PATIENTS",
    "SC_IMAGE_STORAGE",
    "CtCase",
    "Lesion",
    "PatientSpec",
    "RT_STRUCTURE_SET_STORAGE",
    "UnsupportedEncoding",
    "can_encode",
    "encode",
    "make_ct_case",
    "make_ct_study",
    "make_gray8",
    "make_multiframe",
    "make_palette",
    "make_rgb",
    "make_study_set",
    "multiframe_pixels",
    "rgb_pixels",
    "to_bytes",
    "truncated_bytes",
    "with_bad_uid",
    "without",
    "write_files",
]

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
SC_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")
MULTIFRAME_GRAY_WORD_SC_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7.3")
RT_STRUCTURE_SET_STORAGE = UID("1.2.840.10008.5.1.4.1.1.481.3")
JPEG_LOSSLESS_P14 = UID("1.2.840.10008.1.2.4.57")

IMPLEMENTATION_CLASS_UID = UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'https://cloudfilm.invalid/tf').int}")
IMPLEMENTATION_VERSION_NAME = "CLOUDFILM_TF1"
CHARSET = "ISO_IR 192"
FOV_MM = 350.0

LOSSLESS_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEG_LOSSLESS_P14,
    HTJ2KLossless,
)
ENCODABLE_TRANSFER_SYNTAXES: tuple[UID, ...] = (*LOSSLESS_TRANSFER_SYNTAXES, JPEGBaseline8Bit)
_NATIVE = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)


class UnsupportedEncoding(Exception):
    """No encoder for this transfer syntax (or this kind of image) is installed here."""


@dataclass(frozen=True)
class Lesion:
    """A spherical hyperdense lesion in patient (LPS) millimetres."""

    center_mm: tuple[float, float, float]
    radius_mm: float
    hu: float = 160.0


@dataclass(frozen=True)
class PatientSpec:
    """Who a generated study belongs to; ``name`` is a DICOM PN string (may hold ``=`` groups)."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    issuer: str | None = None


PATIENTS: list[PatientSpec] = [
    PatientSpec("Doe^John", "CF-0001", "19600312", "M"),
    PatientSpec("Müller^Jürgen", "CF-0002", "19581105", "M", issuer="KLINIKUM-NORD"),
    PatientSpec("Łukasiewicz^Zoë", "CF-0003", "19720229", "F"),
    PatientSpec("Ñúñez^José", "CF-0004", "19850717", "M"),
    PatientSpec("Yamada^Taro=山田^太郎=やまだ^たろう", "CF-0005", "19490101", "M", issuer="TOKYO-MC"),
    PatientSpec("O'Brien^Siobhán", "CF-0006", "19910623", "F"),
    PatientSpec("Παπαδοπούλου^Ελένη", "CF-0007", "19770930", "F"),
    PatientSpec("van der Berg^Anna Maria", "CF-0008", "20010214", "O"),
]


@dataclass
class CtCase:
    """A generated study plus its ground truth (the lesion, or ``None`` for a normal study)."""

    datasets: list[Dataset]
    lesion: Lesion | None
    study_uid: str
    patient: PatientSpec
    modality: str = "CT"
    accession: str = ""
    study_date: str = ""
    series_uids: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# small helpers


_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://cloudfilm.invalid/tests/factories")


def _uid(*parts: object) -> UID:
    """A deterministic "2.25." UID (PS3.5 B.2) from a version 5 UUID of ``parts``."""
    return UID(f"2.25.{uuid.uuid5(_UUID_NAMESPACE, chr(31).join(repr(p) for p in parts)).int}")


def _ds_str(value: float) -> str:
    return format_number_as_ds(float(value))


def _ds_float(value: float) -> float:
    """The value as it will read back from its DS string, so geometry matches the header exactly."""
    return float(_ds_str(value))


def _digits(uid: str, n: int) -> str:
    return uid.replace(".", "")[-n:]


def _age(birth_date: str, on: str) -> str:
    b = dt.date(int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:8]))
    d = dt.date(int(on[:4]), int(on[4:6]), int(on[6:8]))
    years = d.year - b.year - ((d.month, d.day) < (b.month, b.day))
    return f"{max(years, 0):03d}Y"


def _add_seconds(time_hhmmss: str, seconds: float) -> str:
    base = dt.datetime(2000, 1, 1, int(time_hhmmss[:2]), int(time_hhmmss[2:4]), int(time_hhmmss[4:6]))
    t = base + dt.timedelta(seconds=seconds)
    return t.strftime("%H%M%S") + (f".{t.microsecond // 1000:03d}" if t.microsecond else "")


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _set_pixel_data(ds: Dataset, data: bytes) -> None:
    if len(data) % 2:
        data += b"\x00"
    ds.add_new(0x7FE00010, "OW" if ds.BitsAllocated > 8 else "OB", data)


def _patient_study_elements(ds: Dataset, patient: PatientSpec, study: _StudyInfo) -> None:
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    if patient.issuer:
        ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = _age(patient.birth_date, study.date)
    ds.StudyInstanceUID = study.uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession
    ds.StudyDescription = study.description


@dataclass
class _StudyInfo:
    uid: str
    date: str
    time: str
    accession: str
    study_id: str
    description: str
    referring_physician: str


def _new_instance(sop_class: str, sop_instance: str, transfer_syntax: str, created: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_instance, transfer_syntax)
    ds.SpecificCharacterSet = CHARSET
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceCreationDate = created
    ds.InstanceCreationTime = "120000"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    return ds


# --------------------------------------------------------------------------------------------
# the phantom: a chest-like label volume rendered to CT numbers or MR intensities

_AIR, _FAT, _SOFT, _LUNG, _BONE, _LESION = range(6)
_CT_HU = np.array([-1000.0, -100.0, 40.0, -800.0, 700.0, 0.0], dtype=np.float32)
_MR_SIGNAL = np.array([0.0, 900.0, 550.0, 40.0, 250.0, 0.0], dtype=np.float32)
# body ellipse semi-axes, lungs, spine, as fractions of the FOV (x: patient left, y: posterior)
_BODY_A, _BODY_B = 0.40, 0.29
_LUNG_CX, _LUNG_CY, _LUNG_A, _LUNG_B = 0.17, -0.02, 0.12, 0.18
_SPINE_CY, _SPINE_R = 0.20, 0.035


@dataclass
class _Geometry:
    rows: int
    cols: int
    spacing: float
    thickness: float
    x0: float
    y0: float
    z: list[float]

    @property
    def fov(self) -> float:
        return self.cols * self.spacing

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        x = (self.x0 + self.spacing * np.arange(self.cols, dtype=np.float32))[None, :]
        y = (self.y0 + self.spacing * np.arange(self.rows, dtype=np.float32))[:, None]
        return x, y


def _geometry(rows: int, cols: int, n_slices: int, thickness: float | None) -> _Geometry:
    spacing = _ds_float(FOV_MM / cols)
    if thickness is None:
        thickness = min(5.0, max(0.5, round(300.0 / max(n_slices, 1) * 2) / 2))
    thickness = _ds_float(thickness)
    x0 = _ds_float(-cols * spacing / 2 + spacing / 2)
    y0 = _ds_float(-rows * spacing / 2 + spacing / 2)
    top = (n_slices - 1) * thickness / 2
    z = [_ds_float(top - k * thickness) for k in range(n_slices)]
    return _Geometry(rows, cols, spacing, thickness, x0, y0, z)


def _random_lesion(geo: _Geometry, rng: np.random.Generator) -> Lesion:
    fov = geo.fov
    a, b = _BODY_A * fov, _BODY_B * fov
    radius = float(rng.uniform(0.04, 0.08) * fov)
    z_lo, z_hi = min(geo.z), max(geo.z)
    margin = min(radius, (z_hi - z_lo) / 2)
    for _ in range(1000):
        x = float(rng.uniform(-a, a))
        y = float(rng.uniform(-b, b))
        inside = (x / (0.9 * a - radius)) ** 2 + (y / (0.9 * b - radius)) ** 2 <= 1.0
        clear_of_spine = np.hypot(x, y - _SPINE_CY * fov) > _SPINE_R * fov + 2.5 * radius
        if inside and clear_of_spine:
            break
    else:  # pragma: no cover - the body is far larger than any lesion
        x, y = 0.0, 0.0
    z = float(rng.uniform(z_lo + margin, z_hi - margin))
    return Lesion((round(x, 2), round(y, 2), round(z, 2)), round(radius, 2))


def _render_slices(
    geo: _Geometry, lesion: Lesion | None, rng: np.random.Generator, modality: str, signed: bool
) -> Iterator[np.ndarray]:
    """Yield one stored-value slice at a time (uint16 0..4095, or int16 HU when ``signed``)."""
    x, y = geo.grid()
    fov = geo.fov
    labels2d = np.full((geo.rows, geo.cols), _AIR, dtype=np.uint8)
    body = (x / (_BODY_A * fov)) ** 2 + (y / (_BODY_B * fov)) ** 2
    labels2d[body <= 1.0] = _FAT
    labels2d[body <= 0.85] = _SOFT
    labels2d[np.hypot(x, y - _SPINE_CY * fov) <= _SPINE_R * fov] = _BONE
    lung = np.minimum(
        ((x - _LUNG_CX * fov) / (_LUNG_A * fov)) ** 2 + ((y - _LUNG_CY * fov) / (_LUNG_B * fov)) ** 2,
        ((x + _LUNG_CX * fov) / (_LUNG_A * fov)) ** 2 + ((y - _LUNG_CY * fov) / (_LUNG_B * fov)) ** 2,
    )
    z_lo, z_hi = min(geo.z), max(geo.z)
    z_mid, z_half = (z_lo + z_hi) / 2, max((z_hi - z_lo) / 2, 1e-6)
    values = _CT_HU if modality == "CT" else _MR_SIGNAL
    sigma = 12.0 if modality == "CT" else 18.0
    for z in geo.z:
        labels = labels2d.copy()
        scale = 0.7 + 0.3 * np.cos(0.5 * np.pi * (z - z_mid) / z_half)  # lungs taper at both ends
        labels[(lung <= scale * scale) & (labels2d == _SOFT)] = _LUNG
        img = values[labels]
        if lesion is not None:
            lx, ly, lz = lesion.center_mm
            dz2 = (z - lz) ** 2
            if dz2 <= lesion.radius_mm**2:
                sphere = (x - lx) ** 2 + (y - ly) ** 2 + dz2 <= lesion.radius_mm**2
                lesion_value = lesion.hu if modality == "CT" else 1300.0 + lesion.hu
                img = np.where(sphere, np.float32(lesion_value), img)
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
        if modality == "MR":
            yield np.clip(np.rint(np.abs(img)), 0, 4095).astype(np.uint16)
        elif signed:
            yield np.clip(np.rint(img), -2048, 4095).astype(np.int16)
        else:
            yield np.clip(np.rint(img + 1024.0), 0, 4095).astype(np.uint16)


# --------------------------------------------------------------------------------------------
# CT / MR studies


def make_ct_case(
    patient: PatientSpec | None = None,
    *,
    n_slices: int = 20,
    rows: int = 64,
    cols: int = 64,
    lesion: Lesion | Literal["random"] | None = None,
    seed: int = 0,
    study_uid: str | None = None,
    accession: str | None = None,
    study_date: str = "20240115",
    study_time: str = "093000",
    study_description: str = "CT THORAX",
    series_count: int = 1,
    institution: str = "Cloudfilm General Hospital",
    manufacturer: str = "Cloudfilm Synthetic",
    referring_physician: str = "Curie^Marie",
    modality: Literal["CT", "MR"] = "CT",
    slice_thickness: float | None = None,
    signed: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> CtCase:
    """Generate an axial chest study (CT Image Storage, or MR Image Storage when ``modality="MR"``).

    The FOV is ~350 mm whatever the matrix; image (0, 0) is at the top-left, patient origin at the
    image centre and the middle of the slab (LPS, PS3.3 C.7.6.2.1.1). Stored CT values are
    ``HU + 1024`` (12-bit unsigned, intercept -1024); with ``signed=True`` they are the HU as int16
    (16-bit signed, intercept 0). Series 2.. repeat the volume with other kernels/descriptions.
    """
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality must be 'CT' or 'MR', not {modality!r}")
    if n_slices < 1 or rows < 8 or cols < 8 or series_count < 1:
        raise ValueError("need n_slices >= 1, rows/cols >= 8 and series_count >= 1")
    patient = patient or PATIENTS[seed % len(PATIENTS)]
    rng = np.random.default_rng(seed)
    geo = _geometry(rows, cols, n_slices, slice_thickness)
    if lesion == "random":
        lesion = _random_lesion(geo, rng)
    key = (
        patient.patient_id, patient.name, n_slices, rows, cols, lesion, seed, accession, study_date,
        study_time, study_description, series_count, modality, geo.thickness, signed,
    )  # fmt: skip
    study_uid = study_uid or _uid("study", *key)
    accession = accession if accession is not None else "A" + _digits(study_uid, 9)
    study = _StudyInfo(
        uid=study_uid,
        date=study_date,
        time=study_time,
        accession=accession,
        study_id=_digits(study_uid, 6).lstrip("0") or "1",
        description=study_description,
        referring_physician=referring_physician,
    )
    frame_of_reference = _uid("for", study_uid, *key)
    slices = [s.tobytes() for s in _render_slices(geo, lesion, rng, modality, signed)]

    datasets: list[Dataset] = []
    series_uids: list[str] = []
    for s in range(series_count):
        series_uid = _uid("series", study_uid, s, *key)
        series_uids.append(series_uid)
        series_time = _add_seconds(study_time, 120 + 300 * s)
        for k, pixels in enumerate(slices):
            sop_uid = _uid("instance", series_uid, k)
            ds = _new_instance(
                CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE, sop_uid, ExplicitVRLittleEndian, study_date
            )
            _patient_study_elements(ds, patient, study)
            _cross_sectional_elements(
                ds, geo, k, s, pixels,
                series_uid=series_uid, series_time=series_time, frame_of_reference=frame_of_reference,
                study=study, institution=institution, manufacturer=manufacturer,
                modality=modality, signed=signed,
            )  # fmt: skip
            if transfer_syntax != ExplicitVRLittleEndian:
                ds = encode(ds, transfer_syntax)
            datasets.append(ds)
    return CtCase(
        datasets=datasets,
        lesion=lesion,
        study_uid=study_uid,
        patient=patient,
        modality=modality,
        accession=accession,
        study_date=study_date,
        series_uids=series_uids,
    )


_KERNELS = [("STANDARD", "Soft tissue"), ("LUNG", "Lung"), ("BONE", "Bone")]


def _cross_sectional_elements(
    ds: Dataset,
    geo: _Geometry,
    k: int,
    s: int,
    pixels: bytes,
    *,
    series_uid: str,
    series_time: str,
    frame_of_reference: str,
    study: _StudyInfo,
    institution: str,
    manufacturer: str,
    modality: str,
    signed: bool,
) -> None:
    kernel, kernel_label = _KERNELS[s % len(_KERNELS)]
    thickness = _ds_str(geo.thickness)
    # General Series, Frame of Reference, General Equipment (PS3.3 C.7.3.1, C.7.4.1, C.7.5.1)
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = s + 1
    ds.SeriesDate = study.date
    ds.SeriesTime = series_time
    ds.SeriesDescription = f"{kernel_label} {thickness} mm" if modality == "CT" else f"T1 SE AX {thickness} mm"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.OperatorsName = "Tech^Terry"
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = manufacturer
    ds.InstitutionName = institution
    ds.StationName = "SYNTH01"
    ds.ManufacturerModelName = "Phantom 3000"
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "1.0"
    # General Image / Acquisition (C.7.6.1, C.7.10.1)
    ds.InstanceNumber = k + 1
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = study.date
    ds.AcquisitionTime = series_time
    ds.ContentDate = study.date
    ds.ContentTime = _add_seconds(series_time, 0.5 * k)
    ds.BurnedInAnnotation = "NO"
    # Image Plane (C.7.6.2)
    ds.PixelSpacing = [_ds_str(geo.spacing), _ds_str(geo.spacing)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.ImagePositionPatient = [_ds_str(geo.x0), _ds_str(geo.y0), _ds_str(geo.z[k])]
    ds.SliceThickness = thickness
    ds.SliceLocation = _ds_str(geo.z[k])
    # Image Pixel (C.7.6.3)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = geo.rows
    ds.Columns = geo.cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if signed else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if modality == "CT":
        # CT Image (C.8.2.1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept = "0" if signed else "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.KVP = "120"
        ds.ScanOptions = "HELICAL MODE"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = _ds_str(geo.fov)
        ds.DistanceSourceToDetector = "1040"
        ds.DistanceSourceToPatient = "570"
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "150"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "500"
        ds.XRayTubeCurrent = 200
        ds.Exposure = 100
        ds.FilterType = "BODY"
        ds.GeneratorPower = 24
        ds.FocalSpots = "0.7"
        ds.ConvolutionKernel = kernel
        ds.CTDIvol = 8.5
        phantom = Dataset()
        phantom.CodeValue = "113691"
        phantom.CodingSchemeDesignator = "DCM"
        phantom.CodeMeaning = "IEC Body Dosimetry Phantom"
        ds.CTDIPhantomTypeCodeSequence = [phantom]
        ds.WindowCenter = ["40", "-600"]
        ds.WindowWidth = ["400", "1500"]
        ds.WindowCenterWidthExplanation = ["SOFT_TISSUE", "LUNG"]
    else:
        # MR Image (C.8.3.1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = "se2d1"
        ds.AngioFlag = "N"
        ds.RepetitionTime = "500"
        ds.EchoTime = "15"
        ds.EchoTrainLength = 1
        ds.NumberOfAverages = "1"
        ds.ImagingFrequency = "63.87"
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = "1.5"
        ds.SpacingBetweenSlices = thickness
        ds.FlipAngle = "90"
        ds.WindowCenter = "600"
        ds.WindowWidth = "1200"
    _set_pixel_data(ds, pixels)


def make_ct_study(
    patient: PatientSpec | None = None,
    *,
    n_slices: int = 20,
    rows: int = 64,
    cols: int = 64,
    lesion: Lesion | Literal["random"] | None = None,
    seed: int = 0,
    study_uid: str | None = None,
    accession: str | None = None,
    study_date: str = "20240115",
    study_time: str = "093000",
    study_description: str = "CT THORAX",
    series_count: int = 1,
    institution: str = "Cloudfilm General Hospital",
    manufacturer: str = "Cloudfilm Synthetic",
    referring_physician: str = "Curie^Marie",
    modality: Literal["CT", "MR"] = "CT",
    slice_thickness: float | None = None,
    signed: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Dataset]:
    """The datasets of :func:`make_ct_case` (same arguments), without the ground truth."""
    return make_ct_case(
        patient,
        n_slices=n_slices, rows=rows, cols=cols, lesion=lesion, seed=seed, study_uid=study_uid,
        accession=accession, study_date=study_date, study_time=study_time,
        study_description=study_description, series_count=series_count, institution=institution,
        manufacturer=manufacturer, referring_physician=referring_physician, modality=modality,
        slice_thickness=slice_thickness, signed=signed, transfer_syntax=transfer_syntax,
    ).datasets  # fmt: skip


@dataclass(frozen=True)
class CtVolume:
    """The HU volume :func:`make_ct_case` would store, as a DICOM reader presents it, and its truth."""

    hu: np.ndarray
    """(slices, rows, columns) float32 HU, slices in ascending patient z (the order along the normal)."""
    spacing: tuple[float, float, float]
    """Voxel size (z, y, x) in mm."""
    origin: tuple[float, float, float]
    """Patient (x, y, z) mm of the centre of voxel (0, 0, 0)."""
    lesion: Lesion | None

    def index_to_patient(self, index: Sequence[float] | np.ndarray) -> np.ndarray:
        """(slice, row, column) voxel indices (fractional allowed) to patient (x, y, z) mm."""
        k, i, j = (np.asarray(index, dtype=np.float64)[..., a] for a in range(3))
        x0, y0, z0 = self.origin
        return np.stack([x0 + j * self.spacing[2], y0 + i * self.spacing[1], z0 + k * self.spacing[0]], axis=-1)


def random_ct_lesion(*, n_slices: int = 20, rows: int = 64, cols: int = 64, seed: int = 0,
                     slice_thickness: float | None = None) -> Lesion:  # fmt: skip
    """The lesion ``make_ct_case(lesion="random", ...)`` places with these arguments."""
    return _random_lesion(_geometry(rows, cols, n_slices, slice_thickness), np.random.default_rng(seed))


def make_ct_volume(
    *,
    n_slices: int = 20,
    rows: int = 64,
    cols: int = 64,
    lesion: Lesion | Literal["random"] | None = None,
    seed: int = 0,
    slice_thickness: float | None = None,
) -> CtVolume:
    """The volume of ``make_ct_case(...)`` (CT, unsigned storage) without building DICOM datasets.

    Same geometry, same random draws and the same stored values less the rescale intercept, so it
    equals ``StudyInput.from_datasets(case.datasets).series[0].volume.array`` voxel for voxel (for
    the detector's training loop, where the DICOM round trip costs more than the detection).
    """
    rng = np.random.default_rng(seed)
    geo = _geometry(rows, cols, n_slices, slice_thickness)
    if lesion == "random":
        lesion = _random_lesion(geo, rng)
    slices = list(_render_slices(geo, lesion, rng, "CT", False))
    order = np.argsort(geo.z, kind="stable")  # readers stack slices along the normal (+z)
    hu = np.stack([slices[k] for k in order]).astype(np.float32) - np.float32(1024.0)
    z = [geo.z[k] for k in order]
    dz = float(np.median(np.diff(z))) if len(z) > 1 else geo.thickness
    return CtVolume(hu=hu, spacing=(dz, geo.spacing, geo.spacing), origin=(geo.x0, geo.y0, z[0]), lesion=lesion)


def make_study_set(
    n_studies: int = 12,
    n_slices: int = 20,
    rows: int = 64,
    cols: int = 64,
    seed: int = 0,
    *,
    patients: Sequence[PatientSpec] | None = None,
    modalities: Sequence[Literal["CT", "MR"]] | None = None,
    lesion_fraction: float = 0.5,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[CtCase]:
    """Studies spread round-robin over ``patients`` (several per patient, ~3 months apart).

    Modalities cycle through ``modalities`` (default: every fifth study MR, the rest CT); about
    ``lesion_fraction`` of the studies carry a random lesion, the others are normal.
    """
    pool = list(patients) if patients is not None else PATIENTS
    rng = np.random.default_rng([seed, 7919])
    has_lesion = rng.random(n_studies) < lesion_fraction
    cases: list[CtCase] = []
    for i in range(n_studies):
        patient = pool[i % len(pool)]
        visit = i // len(pool)
        date = dt.date(2023, 1, 9) + dt.timedelta(days=91 * visit + 3 * (i % len(pool)) + seed % 28)
        modality = modalities[i % len(modalities)] if modalities else ("MR" if i % 5 == 4 else "CT")
        cases.append(
            make_ct_case(
                patient,
                n_slices=n_slices,
                rows=rows,
                cols=cols,
                lesion="random" if has_lesion[i] else None,
                seed=seed * 10_007 + i,
                study_date=date.strftime("%Y%m%d"),
                study_time=f"{8 + i % 10:02d}{(7 * i) % 60:02d}00",
                study_description="CT THORAX" if modality == "CT" else "MR THORAX",
                modality=modality,
                transfer_syntax=transfer_syntax,
            )
        )
    return cases


# --------------------------------------------------------------------------------------------
# secondary capture: 8-bit grey, RGB, palette colour, multi-frame word


def _sc_instance(
    sop_class: str, seed: int, kind: str, patient: PatientSpec | None, study_uid: str | None, *key: object
) -> Dataset:
    patient = patient or PATIENTS[seed % len(PATIENTS)]
    study_uid = study_uid or _uid("sc-study", kind, seed, patient.patient_id, *key)
    sop_uid = _uid("sc-instance", kind, seed, study_uid, *key)
    ds = _new_instance(sop_class, sop_uid, ExplicitVRLittleEndian, "20240201")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    study = _StudyInfo(study_uid, "20240201", "101500", "S" + _digits(study_uid, 9),
                       _digits(study_uid, 5).lstrip("0") or "1", f"Synthetic {kind}", "")  # fmt: skip
    _patient_study_elements(ds, patient, study)
    ds.Modality = "OT"
    ds.SeriesInstanceUID = _uid("sc-series", kind, seed, study_uid, *key)
    ds.SeriesNumber = 100
    ds.SeriesDescription = f"Synthetic {kind}"
    ds.BodyPartExamined = "CHEST"  # unpaired, so (General Series) Laterality is not needed
    ds.Manufacturer = "Cloudfilm Synthetic"
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = study.date
    ds.ContentTime = study.time
    ds.BurnedInAnnotation = "NO"
    return ds


def make_gray8(
    rows: int = 64, cols: int = 64, *, seed: int = 0, patient: PatientSpec | None = None,
    study_uid: str | None = None, transfer_syntax: str = ExplicitVRLittleEndian,
) -> Dataset:  # fmt: skip
    """An 8-bit MONOCHROME2 Secondary Capture (what JPEG Baseline grey needs)."""
    ds = _sc_instance(SC_IMAGE_STORAGE, seed, "gray8", patient, study_uid, rows, cols)
    r, c = np.mgrid[0:rows, 0:cols]
    rng = np.random.default_rng(seed)
    img = (r * 255 // max(rows - 1, 1) * 0.6 + c * 255 // max(cols - 1, 1) * 0.4) + rng.normal(0, 3, (rows, cols))
    disc = (r - rows / 2) ** 2 + (c - cols / 2) ** 2 <= (min(rows, cols) / 5) ** 2
    img[disc] = 230
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    _set_pixel_data(ds, np.clip(np.rint(img), 0, 255).astype(np.uint8).tobytes())
    return encode(ds, transfer_syntax) if transfer_syntax != ExplicitVRLittleEndian else ds


def rgb_pixels(rows: int, cols: int) -> np.ndarray:
    """The smooth colour image :func:`make_rgb` stores: hue ramps plus a white disc (uint8)."""
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float32)
    red = 255 * c / max(cols - 1, 1)
    green = 255 * r / max(rows - 1, 1)
    blue = 255 * (1 - (r + c) / max(rows + cols - 2, 1))
    img = np.stack([red, green, blue], axis=-1)
    disc = (r - rows / 2) ** 2 + (c - cols / 2) ** 2 <= (min(rows, cols) / 6) ** 2
    img[disc] = 250
    out: np.ndarray = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def make_rgb(
    rows: int = 64, cols: int = 64, *, seed: int = 0, patient: PatientSpec | None = None,
    study_uid: str | None = None, transfer_syntax: str = ExplicitVRLittleEndian,
) -> Dataset:  # fmt: skip
    """An RGB 8-bit Secondary Capture, colour-by-pixel. ``transfer_syntax=JPEGBaseline8Bit`` gives
    the usual YBR_FULL_422 lossy variant (PS3.5 8.2.1)."""
    ds = _sc_instance(SC_IMAGE_STORAGE, seed, "rgb", patient, study_uid, rows, cols)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    _set_pixel_data(ds, rgb_pixels(rows, cols).tobytes())
    return encode(ds, transfer_syntax) if transfer_syntax != ExplicitVRLittleEndian else ds


def make_palette(
    rows: int = 64, cols: int = 64, *, seed: int = 0, patient: PatientSpec | None = None,
    study_uid: str | None = None, transfer_syntax: str = ExplicitVRLittleEndian,
) -> Dataset:  # fmt: skip
    """A PALETTE COLOR Secondary Capture: 8-bit indices and 256-entry 16-bit RGB LUTs (C.7.6.3)."""
    ds = _sc_instance(SC_IMAGE_STORAGE, seed, "palette", patient, study_uid, rows, cols)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    i = np.arange(256, dtype=np.float64) / 255
    luts = {
        "Red": np.clip(np.rint(65535 * np.clip(1.5 * i, 0, 1)), 0, 65535),
        "Green": np.clip(np.rint(65535 * np.clip(1.5 * i - 0.5, 0, 1)), 0, 65535),
        "Blue": np.clip(np.rint(65535 * np.clip(3 * i - 2, 0, 1)), 0, 65535),
    }
    for colour, lut in luts.items():
        ds.add_new(f"{colour}PaletteColorLookupTableDescriptor", "US", [256, 0, 16])
        ds.add_new(f"{colour}PaletteColorLookupTableData", "OW", lut.astype("<u2").tobytes())
    r, c = np.mgrid[0:rows, 0:cols]
    index = (r * 256 // rows + c * 64 // cols) % 256
    _set_pixel_data(ds, index.astype(np.uint8).tobytes())
    return encode(ds, transfer_syntax) if transfer_syntax != ExplicitVRLittleEndian else ds


def multiframe_pixels(n_frames: int, rows: int, cols: int) -> np.ndarray:
    """The frames :func:`make_multiframe` stores (uint16, 12 bits used).

    Frame ``f`` has ``pixel[f, 0, 0] == f`` and a bright disc that moves with ``f``, so every
    frame differs from every other.
    """
    r, c = np.mgrid[0:rows, 0:cols]
    base = (r * 37 + c * 11) % 1024
    out = np.empty((n_frames, rows, cols), dtype=np.uint16)
    for f in range(n_frames):
        frame = base + 8 * f
        angle = 2 * np.pi * f / max(n_frames, 1)
        cy, cx = rows / 2 + rows / 4 * np.sin(angle), cols / 2 + cols / 4 * np.cos(angle)
        frame = np.where((r - cy) ** 2 + (c - cx) ** 2 <= (min(rows, cols) / 8) ** 2, 3000 + f % 1000, frame)
        out[f] = np.clip(frame, 0, 4095)
        out[f, 0, 0] = f % 4096
    return out


def make_multiframe(
    n_frames: int = 8, rows: int = 64, cols: int = 64, *, seed: int = 0, patient: PatientSpec | None = None,
    study_uid: str | None = None, transfer_syntax: str = ExplicitVRLittleEndian,
) -> Dataset:  # fmt: skip
    """A Multi-frame Grayscale Word Secondary Capture (PS3.3 A.8.3) of :func:`multiframe_pixels`."""
    ds = _sc_instance(MULTIFRAME_GRAY_WORD_SC_STORAGE, seed, "multiframe", patient, study_uid,
                      n_frames, rows, cols)  # fmt: skip
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.NumberOfFrames = n_frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = "40"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    _set_pixel_data(ds, multiframe_pixels(n_frames, rows, cols).astype("<u2").tobytes())
    return encode(ds, transfer_syntax) if transfer_syntax != ExplicitVRLittleEndian else ds


# --------------------------------------------------------------------------------------------
# transfer syntaxes


def can_encode(transfer_syntax_uid: str) -> bool:
    """True when :func:`encode` has an encoder for this transfer syntax on this machine."""
    uid = UID(transfer_syntax_uid)
    if uid in _NATIVE or uid in (JPEGLosslessSV1, JPEG_LOSSLESS_P14, JPEGBaseline8Bit, HTJ2KLossless):
        return True
    try:
        return bool(get_encoder(uid).is_available)
    except NotImplementedError:
        return False


def _swap_words(ds: Dataset) -> None:
    """Byte-swap OW/OL/OF/OD values in place: pydicom writes them as raw bytes (PS3.5 7.3)."""
    widths = {"OW": 2, "OL": 4, "OF": 4, "OD": 8}
    for elem in list(ds.iterall()):
        width = widths.get(str(elem.VR))
        if width and isinstance(elem.value, bytes) and not elem.is_undefined_length:
            elem.value = np.frombuffer(elem.value, dtype=f"<u{width}").byteswap().tobytes()


def _to_native_little_endian(ds: Dataset) -> None:
    ts = ds.file_meta.TransferSyntaxUID
    if ts.is_compressed:
        ds.decompress(generate_instance_uid=False)
    elif ts == ExplicitVRBigEndian:
        _swap_words(ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _frames(ds: Dataset) -> list[np.ndarray]:
    arr = ds.pixel_array
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if n == 1:
        arr = arr[None]
    return [arr[i] for i in range(n)]


def _set_encapsulated(ds: Dataset, frames: list[bytes], transfer_syntax: UID) -> None:
    ds.PixelData = encapsulate(frames, has_bot=True)
    elem = ds["PixelData"]
    elem.VR = "OB"
    elem.is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = transfer_syntax


def encode(ds: Dataset, transfer_syntax_uid: str, *, new_instance_uid: bool = False) -> Dataset:
    """A deep copy of ``ds`` re-encoded in ``transfer_syntax_uid``, as a receiver would read it.

    Compressed results are encapsulated with a Basic Offset Table and one even-length fragment
    per frame (PS3.5 A.4). Raises :class:`UnsupportedEncoding` where no encoder exists here
    (lossy JPEG 2000, say) or the image does not fit the syntax (JPEG Baseline needs 8-bit samples).
    """
    uid = UID(transfer_syntax_uid)
    out = copy.deepcopy(ds)
    for _ in out.iterall():  # decode raw elements before changing the encoding
        pass
    _to_native_little_endian(out)
    bits = int(out.BitsAllocated)
    if uid in _NATIVE:
        if uid == ExplicitVRBigEndian:
            _swap_words(out)
        out.file_meta.TransferSyntaxUID = uid
    elif uid in (JPEGLosslessSV1, JPEG_LOSSLESS_P14):
        precision = int(out.BitsStored)
        mask = (1 << precision) - 1
        encoded = [_jpeg_lossless_encode(f.astype(np.int64) & mask, precision) for f in _frames(out)]
        _set_encapsulated(out, encoded, uid)
    elif uid == HTJ2KLossless:
        import imagecodecs  # OpenJPH's HTJ2K encoder; pydicom has none (openjpeg decodes it)

        encoded = [imagecodecs.htj2k_encode(np.ascontiguousarray(f), reversible=True) for f in _frames(out)]
        _set_encapsulated(out, encoded, uid)
    elif uid == JPEGBaseline8Bit:
        if bits != 8:
            raise UnsupportedEncoding(f"JPEG Baseline needs 8-bit samples; this image has {bits}")
        if out.PhotometricInterpretation == "PALETTE COLOR":
            raise UnsupportedEncoding("PALETTE COLOR indices must not be compressed lossily (PS3.5 8.2)")
        encoded = [_jpeg_baseline_encode(f) for f in _frames(out)]
        if out.SamplesPerPixel == 3:
            out.PhotometricInterpretation = "YBR_FULL_422"
        _set_encapsulated(out, encoded, uid)
        raw = out.Rows * out.Columns * out.SamplesPerPixel * int(out.get("NumberOfFrames", 1) or 1)
        out.LossyImageCompression = "01"
        out.LossyImageCompressionRatio = _ds_str(raw / max(sum(len(f) for f in encoded), 1))
        out.LossyImageCompressionMethod = "ISO_10918_1"
    else:
        if not can_encode(uid):
            raise UnsupportedEncoding(f"no encoder for {uid.name} ({uid}) is installed")
        if uid == JPEG2000Lossless and min(int(out.Rows), int(out.Columns)) < 32:
            raise UnsupportedEncoding("the JPEG 2000 encoder here (6 DWT levels) needs rows and columns >= 32")
        # use_mct=False keeps RGB as RGB in JPEG 2000 (no YBR_RCT), as most senders do
        try:
            out.compress(uid, generate_instance_uid=False, use_mct=False)
        except (ValueError, RuntimeError) as exc:
            raise UnsupportedEncoding(f"{uid.name} cannot encode this image: {exc}") from exc
    if new_instance_uid:
        new_uid = _uid("transcoded", out.SOPInstanceUID, str(uid))
        out.SOPInstanceUID = new_uid
        out.file_meta.MediaStorageSOPInstanceUID = new_uid
    return pydicom.dcmread(io.BytesIO(to_bytes(out)))


def _jpeg_baseline_encode(frame: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if frame.ndim == 3:  # RGB -> YCbCr 4:2:2 (Pillow's subsampling=1)
        Image.fromarray(frame.astype(np.uint8), "RGB").save(buf, "JPEG", quality=quality, subsampling=1)
    else:
        Image.fromarray(frame.astype(np.uint8), "L").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# Code lengths handed out to the 17 difference categories, most frequent first: a valid prefix
# code (Kraft sum 1 - 2**-14, so no all-ones code word, T.81 C) that is near-optimal for images.
_JPEG_LL_CODE_LENGTHS = (2, 3, 3, 3, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)


def _jpeg_lossless_encode(frame: np.ndarray, precision: int) -> bytes:
    """JPEG lossless, process 14, predictor 1 (ITU-T T.81 Annex H), vectorised with numpy.

    ``frame`` is (rows, cols) or (rows, cols, samples) of unsigned values below 2**precision;
    colour is written as one interleaved scan.
    """
    a = frame.astype(np.int64)
    if a.ndim == 2:
        a = a[:, :, None]
    rows, cols, nc = a.shape
    pred = np.empty_like(a)
    pred[:, 1:] = a[:, :-1]  # Ra
    pred[1:, 0] = a[:-1, 0]  # Rb at the start of each line (H.1.2.1)
    pred[0, 0] = 1 << (precision - 1)
    diff = ((a - pred) & 0xFFFF).reshape(-1)
    diff = np.where(diff >= 0x8000, diff - 0x10000, diff)
    ssss = np.frexp(np.abs(diff).astype(np.float64))[1].astype(np.int64)
    extra_len = np.where(ssss == 16, 0, ssss)
    extra = np.where(diff < 0, diff - 1, diff) & ((1 << extra_len) - 1)

    freq = np.bincount(ssss, minlength=17)
    huffval = np.argsort(-freq, kind="stable")
    code_len = np.zeros(17, dtype=np.int64)
    code_len[huffval] = _JPEG_LL_CODE_LENGTHS
    code = np.zeros(17, dtype=np.int64)
    next_code, last_len = 0, _JPEG_LL_CODE_LENGTHS[0]
    for sym, length in zip(huffval, _JPEG_LL_CODE_LENGTHS, strict=True):
        next_code <<= length - last_len
        code[sym], last_len = next_code, length
        next_code += 1

    total_len = code_len[ssss] + extra_len
    value = (code[ssss] << extra_len) | extra
    shifts = total_len[:, None] - 1 - np.arange(int(total_len.max()))[None, :]
    bits = ((value[:, None] >> np.maximum(shifts, 0)) & 1)[shifts >= 0].astype(np.uint8)
    bits = np.concatenate([bits, np.ones((-bits.size) % 8, dtype=np.uint8)])  # pad with 1-bits
    packed = np.packbits(bits)
    packed = np.insert(packed, np.flatnonzero(packed == 0xFF) + 1, 0)  # byte stuffing (F.1.2.3)

    counts = [sum(1 for n in _JPEG_LL_CODE_LENGTHS if n == length) for length in range(1, 17)]
    sof = bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([nc])
    sof += b"".join(bytes([i + 1, 0x11, 0]) for i in range(nc))
    dht = bytes([0x00, *counts, *(int(v) for v in huffval)])
    sos = bytes([nc]) + b"".join(bytes([i + 1, 0x00]) for i in range(nc)) + bytes([1, 0, 0])

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    return (
        b"\xff\xd8" + segment(0xC3, sof) + segment(0xC4, dht) + segment(0xDA, sos)
        + packed.tobytes() + b"\xff\xd9"
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# files and broken input


def to_bytes(ds: Dataset) -> bytes:
    """Part 10 bytes (preamble, DICM, file meta) in the dataset's own transfer syntax.

    Value validation is off while writing (pydicom's global switch, briefly) so deliberately
    broken datasets (bad UIDs) can be written.
    """
    buf = io.BytesIO()
    with pydicom_config.disable_value_validation():
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def write_files(datasets: Sequence[Dataset], directory: str | Path) -> list[Path]:
    """Write each dataset as ``directory/NNNNN.dcm`` (names never come from dataset values)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        path = root / f"{i:05d}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(path)
    return paths


def truncated_bytes(ds: Dataset, *, where: Literal["pixel_data", "header", "file_meta"] = "pixel_data") -> bytes:
    """The Part 10 bytes of ``ds`` cut short: half-way through the pixel data, through the
    dataset header (between file meta and pixel data) or through the file meta group."""
    raw = to_bytes(ds)
    meta_end = 144 + int.from_bytes(raw[140:144], "little")
    ts = ds.file_meta.TransferSyntaxUID
    tag = b"\x7f\xe0\x00\x10" if ts == ExplicitVRBigEndian else b"\xe0\x7f\x10\x00"
    pixel_at = raw.rfind(tag) if ts != DeflatedExplicitVRLittleEndian else -1
    if pixel_at < meta_end:
        pixel_at = meta_end + (len(raw) - meta_end) // 2
    if where == "pixel_data":
        cut = pixel_at + max((len(raw) - pixel_at) // 2, 13)
    elif where == "header":
        cut = meta_end + (pixel_at - meta_end) // 2
    elif where == "file_meta":
        cut = 132 + (meta_end - 132) // 2
    else:
        raise ValueError(f"unknown truncation point {where!r}")
    return raw[: min(cut, len(raw) - 1)]


def without(ds: Dataset, keyword: str) -> Dataset:
    """A deep copy with ``keyword`` removed (from the file meta too, for group 0002 keywords)."""
    out = copy.deepcopy(ds)
    for target in (out, out.get("file_meta")):
        if target is not None and keyword in target:
            delattr(target, keyword)
    return out


def with_bad_uid(ds: Dataset, keyword: str, value: str = "1.2.3/../../etc") -> Dataset:
    """A deep copy whose UID attribute ``keyword`` holds ``value`` unvalidated; the matching file
    meta UID (MediaStorageSOPClass/InstanceUID) is changed along with SOPClass/SOPInstanceUID."""
    out = copy.deepcopy(ds)
    targets: list[tuple[Dataset, str]] = [(out, keyword)]
    meta_twin = {"SOPInstanceUID": "MediaStorageSOPInstanceUID", "SOPClassUID": "MediaStorageSOPClassUID"}
    if keyword in meta_twin:
        targets.append((out.file_meta, meta_twin[keyword]))
    elif keyword in ("TransferSyntaxUID", "MediaStorageSOPInstanceUID", "MediaStorageSOPClassUID"):
        targets = [(out.file_meta, keyword)]
    with pydicom_config.disable_value_validation():
        for target, kw in targets:
            tag = pydicom.datadict.tag_for_keyword(kw)
            if tag is None:
                raise ValueError(f"unknown keyword {kw!r}")
            target[tag] = DataElement(tag, "UI", value)
    return out


# --------------------------------------------------------------------------------------------
# edge-case encodings: what real senders write and pydicom's own writer would not (undefined
# lengths at depth, UN and private sequences, empty and odd-length values, padding, elements
# after the pixel data), element by element (PS3.5 7.1, 7.5, 6.2.2)

_ITEM_TAG, _ITEM_DELIMITER, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_LENGTH_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class Encoding:
    """How a data set is encoded: VR explicit or implicit, byte order."""

    explicit: bool = True
    little: bool = True

    @property
    def transfer_syntax(self) -> UID:
        if not self.little:
            return ExplicitVRBigEndian
        return ExplicitVRLittleEndian if self.explicit else ImplicitVRLittleEndian


def raw_element(tag: int, vr: str, value: bytes, enc: Encoding = Encoding(), *, length: int | None = None) -> bytes:
    """One data element as ``enc`` encodes it, ``value`` as given (no padding added); ``length``
    overrides the length field (``UNDEFINED`` for an undefined length)."""
    order = "<" if enc.little else ">"
    size = len(value) if length is None else length
    if not enc.explicit or tag >> 16 == 0xFFFE:
        return struct.pack(order + "HHI", tag >> 16, tag & 0xFFFF, size) + value
    if vr in _LONG_LENGTH_VRS:
        return struct.pack(order + "HH2s2xI", tag >> 16, tag & 0xFFFF, vr.encode(), size) + value
    return struct.pack(order + "HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), size) + value


def raw_item(content: bytes, enc: Encoding = Encoding(), *, undefined: bool = True) -> bytes:
    """A sequence item holding ``content``, of undefined length (closed by its delimiter) or not."""
    if undefined:
        return raw_element(_ITEM_TAG, "", content, enc, length=UNDEFINED) + raw_element(_ITEM_DELIMITER, "", b"", enc)
    return raw_element(_ITEM_TAG, "", content, enc)


def raw_sequence(tag: int, items: Sequence[bytes], enc: Encoding = Encoding(), *, undefined: bool = True,
                 items_undefined: bool = True, vr: str = "SQ") -> bytes:
    """A sequence of ``items`` (encoded element lists), of undefined length or not."""
    body = b"".join(raw_item(item, enc, undefined=items_undefined) for item in items)
    if undefined:
        return raw_element(tag, vr, body, enc, length=UNDEFINED) + raw_element(_SEQUENCE_DELIMITER, "", b"", enc)
    return raw_element(tag, vr, body, enc)


def _text(value: str) -> bytes:
    return value.encode("utf-8")


def dataset_bytes(ds: Dataset, enc: Encoding) -> bytes:
    """``ds`` encoded by pydicom as a bare data set (no File Meta Information)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buf = DicomBytesIO()
    buf.is_little_endian = enc.little
    buf.is_implicit_VR = not enc.explicit
    with pydicom_config.disable_value_validation():
        write_dataset(buf, ds)
    return buf.getvalue()


def part10_bytes(dataset: bytes, sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and File Meta Information (the factory's implementation) before ``dataset``."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    buf = DicomBytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, _file_meta(sop_class, sop_instance, transfer_syntax), enforce_standard=True)
    return buf.getvalue() + dataset


def _rt_contours(enc: Encoding, *, undefined: bool) -> bytes:
    """An RT Structure Set's ROI Contour Sequence: sequences nested four deep (PS3.3 C.8.8.6), with
    odd-length contour data as some planning systems write it."""
    image_ref = (raw_element(0x00081150, "UI", b"1.2.840.10008.5.1.4.1.1.2\x00", enc)
                 + raw_element(0x00081155, "UI", b"1.2.3.4.5.6.7", enc)  # odd length, no padding
                 + raw_sequence(0x0040A043, [raw_element(0x00080100, "SH", b"113691", enc)
                                             + raw_element(0x00080102, "SH", b"DCM ", enc)], enc,
                                undefined=False, items_undefined=False))
    contour = (raw_sequence(0x30060016, [image_ref, image_ref], enc, undefined=undefined, items_undefined=undefined)
               + raw_element(0x30060042, "CS", b"CLOSED_PLANAR ", enc)
               + raw_element(0x30060046, "IS", b"3 ", enc)
               + raw_element(0x30060050, "DS", b"1.5\\-2\\30.25\\4\\5\\6.125\\7\\8\\9", enc))  # odd
    roi = (raw_element(0x30060002, "IS", b"1 ", enc)
           + raw_sequence(0x30060040, [contour, contour], enc, undefined=undefined, items_undefined=undefined)
           + raw_element(0x30060084, "IS", b"1 ", enc))
    return raw_sequence(0x30060039, [roi], enc, undefined=undefined, items_undefined=undefined)


def _private_block(enc: Encoding) -> bytes:
    """A private creator and its elements: a private sequence of undefined length, padded and
    odd-length values of several VRs (explicit VR only: implicit private values are UN)."""
    inner = (raw_element(0x00291010, "LO", b"inside", enc) + raw_element(0x00291011, "US", b"\x05\x00"
                                                                        if enc.little else b"\x00\x05", enc))
    elements = [
        raw_element(0x00290010, "LO", b"CLOUDFILM EDGE", enc),
        raw_sequence(0x00291001, [inner, b""], enc),  # the second item is empty
    ]
    if enc.explicit:
        elements += [
            raw_element(0x00291020, "CS", b" A \\B ", enc),
            raw_element(0x00291021, "AE", b" SCU  ", enc),
            raw_element(0x00291022, "UR", b"http://example.org/x ", enc),
            raw_element(0x00291023, "SH", b"x\x00", enc),
            raw_element(0x00291024, "LO", b"  lead\\trail  ", enc),
            raw_element(0x00291025, "DA", b"20200101 ", enc),
            raw_element(0x00291026, "TM", b"101010.5", enc),
            raw_element(0x00291030, "LO", b"ABC", enc),  # odd lengths, no padding
            raw_element(0x00291031, "OB", b"\x01\x02\x03", enc),
            raw_element(0x00291032, "UI", b"1.2.3", enc),
            raw_element(0x00291033, "DS", b"1.5", enc),
            raw_element(0x00291034, "PN", b"A^B", enc),
            raw_element(0x00291035, "IS", b"1\\2\\3", enc),
            raw_element(0x00291036, "FD", struct.pack("<d" if enc.little else ">d", 2.5), enc),
            raw_element(0x00291037, "AT", struct.pack("<HH" if enc.little else ">HH", 0x0010, 0x0020), enc),
        ]
    return b"".join(elements)


def _un_elements() -> bytes:
    """Known attributes that passed through a system that did not know them: VR UN, a sequence of
    undefined length whose items are implicit VR little endian (PS3.5 6.2.2), and a text value."""
    implicit = Encoding(explicit=False)
    item = raw_element(0x00401001, "SH", b"RP-1", implicit) + raw_element(0x00321060, "LO", b"CT chest ", implicit)
    return (raw_element(0x00400254, "UN", b"Thorax plain", Encoding())
            + raw_sequence(0x00400275, [item, item], implicit, vr="UN")
            .replace(struct.pack("<HHI", 0x0040, 0x0275, UNDEFINED),
                     struct.pack("<HH2s2xI", 0x0040, 0x0275, b"UN", UNDEFINED)))


def _empty_values(enc: Encoding) -> bytes:
    """Elements with empty values of many VRs (PS3.5 7.1: a zero length is an empty value)."""
    return b"".join(raw_element(tag, vr, b"", enc) for tag, vr in (
        (0x00321032, "PN"), (0x00400241, "AE"), (0x00400244, "DA"), (0x00400245, "TM"), (0x00400253, "SH"),
        (0x00400260, "SQ"), (0x00540081, "US"), (0x00541300, "DS"), (0x00720064, "IS"),
    ))


def _trailing_elements(enc: Encoding) -> bytes:
    """Elements after the pixel data: a private group and Data Set Trailing Padding (PS3.10 7.2)."""
    return (raw_element(0x7FE10010, "LO", b"CLOUDFILM TAIL", enc) + raw_element(0x7FE11010, "OB", b"\x00\x01", enc)
            + raw_element(0xFFFCFFFC, "OB", b"\x00" * 16, enc))


def edge_case_corpus() -> list[tuple[str, bytes]]:
    """Named Part 10 objects that real senders produce and a reader must take (each its own SOP
    Instance UID): none of them damaged, all of them read by pydicom."""
    cases: list[tuple[str, bytes]] = []
    base = make_ct_study(PATIENTS[2], n_slices=1, rows=32, cols=32, seed=77)[0]

    def assemble(name: str, enc: Encoding, extra: bytes, trailing: bytes = b"",
                 ds: Dataset | None = None) -> tuple[Dataset, bytes]:
        src = copy.deepcopy(ds if ds is not None else base)
        src.SOPInstanceUID = _uid("edge", name)
        if "PixelData" not in src:
            return src, dataset_bytes(src, enc) + extra + trailing
        pixels = src.PixelData
        del src.PixelData
        pixel_value = pixels if enc.little else np.frombuffer(pixels, "<u2").byteswap().tobytes()
        body = dataset_bytes(src, enc) + extra + raw_element(0x7FE00010, "OW", pixel_value, enc) + trailing
        return src, body

    def add(name: str, enc: Encoding, extra: bytes, trailing: bytes = b"", ds: Dataset | None = None) -> None:
        src, body = assemble(name, enc, extra, trailing, ds)
        cases.append((name, part10_bytes(body, src.SOPClassUID, src.SOPInstanceUID, enc.transfer_syntax)))

    for label, enc in (("explicit-le", Encoding()), ("implicit-le", Encoding(explicit=False)),
                       ("explicit-be", Encoding(little=False))):
        add(f"rt-contours-undefined-{label}", enc, _rt_contours(enc, undefined=True))
        add(f"rt-contours-defined-{label}", enc, _rt_contours(enc, undefined=False))
        add(f"private-{label}", enc, _private_block(enc))
        add(f"empty-values-{label}", enc, _empty_values(enc))
        add(f"after-pixel-data-{label}", enc, b"", _trailing_elements(enc))
    # An RT Structure Set ends with its undefined-length sequences: no pixel data follows.
    structure_set = Dataset()
    for keyword in ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName", "SeriesInstanceUID"):
        setattr(structure_set, keyword, base.get(keyword))
    structure_set.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    structure_set.Modality, structure_set.SeriesNumber = "RTSTRUCT", 9
    structure_set.SeriesInstanceUID = _uid("edge", "rtstruct series")
    structure_set.StructureSetLabel = "EDGE"
    for label, enc in (("explicit-le", Encoding()), ("implicit-le", Encoding(explicit=False)),
                       ("explicit-be", Encoding(little=False))):
        add(f"rtstruct-ending-in-sequences-{label}", enc, _rt_contours(enc, undefined=True), ds=structure_set)
    everything = _private_block(Encoding()) + _empty_values(Encoding()) + _rt_contours(Encoding(), undefined=True)
    add("un-vr-explicit-le", Encoding(), _un_elements())
    add("everything-explicit-le", Encoding(), everything, _trailing_elements(Encoding()))

    nul = copy.deepcopy(base)
    nul.PatientName, nul.PatientID, nul.StudyDescription = "Nul^In\x00Name", "ID\x00NUL", "Desc\x00ription"
    add("nul-in-indexed-values", Encoding(), b"", ds=nul)
    latin1 = copy.deepcopy(base)
    latin1.SpecificCharacterSet = "ISO_IR 100"
    latin1.PatientName, latin1.StudyDescription = "Müller^Jürgen", "Thorax nativ, Übersicht"
    add("latin1", Encoding(), b"", ds=latin1)
    japanese = copy.deepcopy(base)
    japanese.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    japanese.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    add("iso2022-japanese", Encoding(), b"", ds=japanese)

    # Deflate (PS3.5 A.5): the whole data set, undefined lengths included, as one raw deflate stream.
    src, body = assemble("deflated", Encoding(), everything, _trailing_elements(Encoding()))
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = packer.compress(body) + packer.flush()
    cases.append(("deflated", part10_bytes(deflated, src.SOPClassUID, src.SOPInstanceUID,
                                           DeflatedExplicitVRLittleEndian)))

    # Every transfer syntax there is an encoder for, single and multi-frame, with and without a
    # Basic Offset Table, one fragment per frame or several.
    images = (("ct", base), ("multiframe", make_multiframe(n_frames=3, rows=32, cols=48)), ("rgb", make_rgb()))
    for ts in ENCODABLE_TRANSFER_SYNTAXES:
        for label, image in images:
            try:
                encoded = encode(image, ts)
            except UnsupportedEncoding:
                continue
            encoded.SOPInstanceUID = encoded.file_meta.MediaStorageSOPInstanceUID = _uid("edge", label, ts)
            cases.append((f"{label}-{ts.keyword}", to_bytes(encoded)))
            if ts == RLELossless and label == "multiframe":
                cases += _fragmented(encoded)
    return cases


def _fragmented(encoded: Dataset) -> list[tuple[str, bytes]]:
    """``encoded`` (encapsulated, several frames) re-encapsulated without a Basic Offset Table, and
    with each frame split over two fragments (with the table, which says where frames start)."""
    from pydicom.encaps import generate_frames

    frames = list(generate_frames(encoded.PixelData, number_of_frames=int(encoded.NumberOfFrames)))
    out = []
    for label, fragments, has_bot in (("no-bot", [[f] for f in frames], False),
                                      ("two-fragments-per-frame", [[f[:len(f) // 2 & ~1], f[len(f) // 2 & ~1:]]
                                                                   for f in frames], True)):
        ds = copy.deepcopy(encoded)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid("edge", "fragments", label)
        ds.PixelData = _encapsulate_fragments(fragments, has_bot)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        out.append((f"multiframe-rle-{label}", to_bytes(ds)))
    return out


def _encapsulate_fragments(frames: list[list[bytes]], has_bot: bool) -> bytes:
    """Encapsulated pixel data (PS3.5 A.4) from each frame's fragments (each of even length); the
    sequence delimiter is the writer's to add, as for ``pydicom.encaps.encapsulate``."""
    items = []
    offsets = []
    position = 0
    for fragments in frames:
        offsets.append(position)
        for fragment in fragments:
            fragment += b"\x00" * (len(fragment) % 2)
            items.append(struct.pack("<HHI", 0xFFFE, 0xE000, len(fragment)) + fragment)
            position += 8 + len(fragment)
    bot = struct.pack(f"<{len(offsets)}I", *offsets) if has_bot else b""
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(bot)) + bot + b"".join(items)
