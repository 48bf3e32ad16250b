"""Series → volume: frames sorted along the slice normal, rescale applied, geometry kept.

Slices are ordered by ImagePositionPatient projected on the normal (row × column direction cosines,
PS3.3 C.7.6.2.1.1), the stack with the most slices wins when a series mixes orientations or
matrix sizes (localisers), and repeated positions keep the lowest InstanceNumber. Enhanced
(multi-frame) instances contribute one slice per frame, with geometry and rescale taken from their
functional groups (PS3.3 C.7.6.16). Values are ``stored * RescaleSlope + RescaleIntercept`` as
float32 — Hounsfield units for CT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

__all__ = ["Volume", "VolumeError", "build_volume"]


class VolumeError(ValueError):
    """The series cannot be presented as one volume (no pixels, colour, nothing consistent)."""


@dataclass(frozen=True, eq=False)
class Volume:
    """A ``(slices, rows, columns)`` float32 volume and where it lies in the patient (LPS mm)."""

    array: npt.NDArray[np.float32]
    spacing: tuple[float, float, float]
    """Voxel size (z, y, x) in mm: slice step along the normal, row spacing, column spacing."""
    origin: tuple[float, float, float]
    """Patient position of the centre of voxel (0, 0, 0) (ImagePositionPatient of slice 0)."""
    row_direction: tuple[float, float, float]
    """Direction of increasing column index (ImageOrientationPatient[0:3])."""
    column_direction: tuple[float, float, float]
    """Direction of increasing row index (ImageOrientationPatient[3:6])."""
    normal: tuple[float, float, float]
    """Direction of increasing slice index (row × column direction)."""
    positions: npt.NDArray[np.float64]
    """Each slice's position along ``normal`` in mm (ascending)."""
    sop_instance_uids: tuple[str, ...]
    """The instance each slice comes from."""
    frame_numbers: tuple[int | None, ...]
    """1-based frame number for slices of multi-frame instances, else ``None``."""
    datasets: tuple[Dataset, ...]
    """The header each slice comes from (a multi-frame instance repeats)."""
    frame_of_reference_uid: str | None
    has_geometry: bool
    """False when the headers had no position/orientation (slices then follow InstanceNumber)."""
    units: str = ""
    """RescaleType (``HU`` for CT) when known."""

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return (z, y, x)

    @property
    def direction(self) -> npt.NDArray[np.float64]:
        """3×3 matrix whose columns are the patient directions of the (slice, row, column) axes."""
        return np.array([self.normal, self.column_direction, self.row_direction], dtype=np.float64).T

    @property
    def affine(self) -> npt.NDArray[np.float64]:
        """4×4 matrix mapping (slice, row, column, 1) to (x, y, z, 1) with a uniform slice step."""
        m = np.eye(4)
        m[:3, :3] = self.direction * np.array(self.spacing)
        m[:3, 3] = self.origin
        return m

    def index_to_patient(self, index: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(…, 3) voxel indices (slice, row, column), fractional allowed, to patient (x, y, z) mm.

        The slice coordinate follows the actual slice positions, so uneven spacing is honoured.
        """
        idx = np.asarray(index, dtype=np.float64)
        k, i, j = idx[..., 0], idx[..., 1], idx[..., 2]
        along = self._slice_offset(k)
        return (
            np.asarray(self.origin)
            + along[..., None] * np.asarray(self.normal)
            + (i * self.spacing[1])[..., None] * np.asarray(self.column_direction)
            + (j * self.spacing[2])[..., None] * np.asarray(self.row_direction)
        )

    def patient_to_index(self, point: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(…, 3) patient (x, y, z) mm to fractional voxel indices (slice, row, column)."""
        d = np.asarray(point, dtype=np.float64) - np.asarray(self.origin)
        along = d @ np.asarray(self.normal)
        i = (d @ np.asarray(self.column_direction)) / self.spacing[1]
        j = (d @ np.asarray(self.row_direction)) / self.spacing[2]
        return np.stack([self._slice_index(along), i, j], axis=-1)

    def _slice_offset(self, k: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        offsets = self.positions - self.positions[0]
        if len(offsets) < 2:
            return k * self.spacing[0]
        n = len(offsets) - 1
        inside = np.interp(k, np.arange(n + 1), offsets)
        # linear extrapolation beyond the first/last slice with the end steps
        lo = offsets[0] + k * (offsets[1] - offsets[0])
        hi = offsets[n] + (k - n) * (offsets[n] - offsets[n - 1])
        return np.where(k < 0, lo, np.where(k > n, hi, inside))

    def _slice_index(self, along: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        offsets = self.positions - self.positions[0]
        if len(offsets) < 2:
            return along / self.spacing[0]
        n = len(offsets) - 1
        inside = np.interp(along, offsets, np.arange(n + 1, dtype=np.float64))
        lo = along / (offsets[1] - offsets[0])
        hi = n + (along - offsets[n]) / (offsets[n] - offsets[n - 1])
        return np.where(along < 0, lo, np.where(along > offsets[n], hi, inside))


# --------------------------------------------------------------------------------------------


@dataclass
class _Slice:
    ds: Dataset
    frame: int | None  # 0-based frame index within a multi-frame instance
    position: npt.NDArray[np.float64] | None
    orientation: npt.NDArray[np.float64] | None
    pixel_spacing: tuple[float, float] | None
    slope: float
    intercept: float
    order: tuple[int, int]


def _item(seq_owner: Dataset | None, keyword: str) -> Dataset | None:
    if seq_owner is None:
        return None
    seq = seq_owner.get(keyword)
    return seq[0] if seq else None


def _lookup(groups: Sequence[Dataset | None], macro: str, keyword: str) -> Any:
    """A value from the per-frame then shared functional group macro (PS3.3 C.7.6.16)."""
    for group in groups:
        item = _item(group, macro)
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def _slices_of(ds: Dataset, order: int) -> list[_Slice]:
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    slices = []
    for f in range(n_frames):
        groups: list[Dataset | None] = [per_frame[f] if f < len(per_frame) else None, shared]
        ipp = _lookup(groups, "PlanePositionSequence", "ImagePositionPatient")
        iop = _lookup(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = _lookup(groups, "PixelMeasuresSequence", "PixelSpacing")
        slope = _lookup(groups, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _lookup(groups, "PixelValueTransformationSequence", "RescaleIntercept")
        ipp = ipp if ipp is not None else ds.get("ImagePositionPatient")
        iop = iop if iop is not None else ds.get("ImageOrientationPatient")
        spacing = spacing if spacing is not None else ds.get("PixelSpacing")
        slope = slope if slope is not None else ds.get("RescaleSlope")
        intercept = intercept if intercept is not None else ds.get("RescaleIntercept")
        instance_number = ds.get("InstanceNumber")
        slices.append(
            _Slice(
                ds=ds,
                frame=f if n_frames > 1 else None,
                position=np.array([float(v) for v in ipp]) if ipp is not None and len(ipp) == 3 else None,
                orientation=np.array([float(v) for v in iop]) if iop is not None and len(iop) == 6 else None,
                pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing and len(spacing) == 2 else None,
                slope=float(slope) if slope is not None else 1.0,
                intercept=float(intercept) if intercept is not None else 0.0,
                order=(int(instance_number) if instance_number is not None else order, f),
            )
        )
    return slices


def _stack_key(s: _Slice) -> tuple[object, ...]:
    ori = tuple(np.round(s.orientation, 3)) if s.orientation is not None else None
    ps = tuple(round(v, 4) for v in s.pixel_spacing) if s.pixel_spacing else None
    return (int(s.ds.Rows), int(s.ds.Columns), ori, ps)


def _unit(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    n = float(np.linalg.norm(v))
    if n < 1e-6:
        raise VolumeError("ImageOrientationPatient has a zero direction")
    return v / n


def build_volume(datasets: Sequence[Dataset]) -> Volume:
    """Assemble the largest consistent stack of ``datasets`` (one series) into a :class:`Volume`."""
    imaged = [ds for ds in datasets if "PixelData" in ds and "Rows" in ds and "Columns" in ds]
    if not imaged:
        raise VolumeError("the series has no images with pixel data")
    if any(int(ds.get("SamplesPerPixel", 1)) != 1 for ds in imaged):
        raise VolumeError("colour images cannot form a scalar volume")
    all_slices = [s for n, ds in enumerate(imaged) for s in _slices_of(ds, n)]
    stacks: dict[tuple[object, ...], list[_Slice]] = {}
    for s in all_slices:
        stacks.setdefault(_stack_key(s), []).append(s)
    stack = max(stacks.values(), key=len)
    stack.sort(key=lambda s: s.order)
    first = stack[0]
    geometric = all(s.position is not None for s in stack) and first.orientation is not None

    if geometric:
        assert first.orientation is not None
        row_dir = _unit(first.orientation[:3])
        col_dir = _unit(first.orientation[3:])
        normal = _unit(np.cross(row_dir, col_dir))
        keyed = sorted(stack, key=lambda s: float(np.dot(s.position, normal)))  # type: ignore[arg-type]
        positions_all = [float(np.dot(s.position, normal)) for s in keyed]  # type: ignore[arg-type]
        # drop repeats (same position), keeping the lowest InstanceNumber
        kept: list[_Slice] = []
        positions: list[float] = []
        for s, p in sorted(zip(keyed, positions_all, strict=True), key=lambda sp: (round(sp[1], 3), sp[0].order)):
            if positions and abs(p - positions[-1]) < 1e-3:
                continue
            kept.append(s)
            positions.append(p)
        stack = kept
        steps = np.diff(positions)
        dz = float(np.median(steps)) if len(steps) else float(first.ds.get("SliceThickness", 1.0) or 1.0)
        origin = tuple(float(v) for v in stack[0].position)  # type: ignore[union-attr]
    else:
        row_dir, col_dir, normal = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0])
        dz = float(first.ds.get("SpacingBetweenSlices", first.ds.get("SliceThickness", 1.0)) or 1.0)
        positions = [k * dz for k in range(len(stack))]
        origin = (0.0, 0.0, 0.0)
    dy, dx = first.pixel_spacing or (1.0, 1.0)

    rows, cols = int(first.ds.Rows), int(first.ds.Columns)
    array = np.empty((len(stack), rows, cols), dtype=np.float32)
    decoded: dict[int, npt.NDArray[Any]] = {}
    for k, s in enumerate(stack):
        key = id(s.ds)
        if key not in decoded:
            try:
                decoded[key] = s.ds.pixel_array
            except Exception as exc:  # pydicom raises many types for undecodable pixel data
                raise VolumeError(f"cannot decode pixel data of {s.ds.get('SOPInstanceUID', '?')}: {exc}") from exc
        pixels = decoded[key] if s.frame is None else decoded[key][s.frame]
        out = array[k]
        out[...] = pixels
        if s.slope != 1.0:
            out *= np.float32(s.slope)
        if s.intercept != 0.0:
            out += np.float32(s.intercept)

    units = str(first.ds.get("RescaleType", "") or ("HU" if first.ds.get("Modality") == "CT" else ""))
    return Volume(
        array=array,
        spacing=(abs(dz) if dz else 1.0, float(dy), float(dx)),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        row_direction=(float(row_dir[0]), float(row_dir[1]), float(row_dir[2])),
        column_direction=(float(col_dir[0]), float(col_dir[1]), float(col_dir[2])),
        normal=(float(normal[0]), float(normal[1]), float(normal[2])),
        positions=np.asarray(positions, dtype=np.float64),
        sop_instance_uids=tuple(str(s.ds.SOPInstanceUID) for s in stack),
        frame_numbers=tuple(None if s.frame is None else s.frame + 1 for s in stack),
        datasets=tuple(s.ds for s in stack),
        frame_of_reference_uid=str(first.ds.FrameOfReferenceUID) if "FrameOfReferenceUID" in first.ds else None,
        has_geometry=geometric,
        units=units,
    )
