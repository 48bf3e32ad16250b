"""What a plugin reports: typed, validated findings with a JSON form (schema version 1.0).

In-process plugins return :class:`Findings`; vendor-hosted plugins answer with the same thing as
JSON (``Findings.from_json``). The JSON Schema is ``Findings.model_json_schema()``, shipped as
``ai_plugins/sdk/findings.schema.json``. In brief::

    {
      "schema_version": "1.0",
      "evaluated_series": ["1.2.3..."],                       # series the plugin looked at
      "classifications": [                                     # study level
        {"code": {"value": "129744006", "scheme": "SCT", "meaning": "High density lesion"},
         "probability": 0.97}],
      "findings": [{
        "code": {"value": "4147007", "scheme": "SCT", "meaning": "Mass"},
        "probability": 0.95,
        "label": "Lesion 1",
        "finding_site": null,
        "region": {"type": "point3d", "x": -10.5, "y": 20.0, "z": 33.0,
                   "frame_of_reference_uid": "1.2.3..."},
        "measurements": [{"name": {"value": "81827009", "scheme": "SCT", "meaning": "Diameter"},
                          "value": 24.5, "unit": {"value": "mm", "scheme": "UCUM", "meaning": "millimeter"}}]
      }],
      "segmentations": [{
        "series_uid": "1.2.3...",
        "segments": [{"label": "Lesion", "category": {...}, "property_type": {...},
                      "mask": {"shape": [z, y, x], "encoding": "zlib+packbits+base64", "data": "..."}}]
      }],
      "summary": "1 lesion"
    }

Regions are one of ``point`` / ``box`` / ``polygon`` (image coordinates on a referenced instance:
``x`` = column, ``y`` = row, (0, 0) = top-left corner of the top-left pixel, PS3.3 C.18.6.1.2)
or ``point3d`` (patient LPS millimetres in a frame of reference, PS3.3 C.18.9.1.2).
Segment masks are boolean ``(slices, rows, columns)`` volumes aligned with the series volume as
:class:`ai_plugins.sdk.StudyInput` presents it (slices sorted by position along the normal).
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ai_plugins.sdk.codes import Code

__all__ = [
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "BoolMask",
    "BoundingBox",
    "Classification",
    "Finding",
    "Findings",
    "InvalidFindings",
    "Measurement",
    "Point2D",
    "Point3D",
    "Polygon",
    "Region",
    "Segment",
    "Segmentation",
]

SCHEMA_VERSION: Literal["1.0"] = "1.0"
SCHEMA_PATH = Path(__file__).with_name("findings.schema.json")
MASK_ENCODING = "zlib+packbits+base64"

_UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
UID = Annotated[str, Field(pattern=_UID_PATTERN, max_length=64, description="A DICOM UID (PS3.5 9)")]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, description="0..1")]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
FrameNumber = Annotated[int, Field(ge=1, description="1-based frame of a multi-frame instance")]


class InvalidFindings(ValueError):
    """Findings that do not follow the schema (e.g. a vendor's malformed JSON answer)."""


# --------------------------------------------------------------------------------------------
# masks: numpy in Python, packed bits in JSON


def _decode_mask(value: dict[str, Any]) -> npt.NDArray[np.bool_]:
    if value.get("encoding") != MASK_ENCODING:
        raise ValueError(f"mask encoding must be {MASK_ENCODING!r}")
    shape = value.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape)):
        raise ValueError("mask shape must be three positive integers [slices, rows, columns]")
    size = math.prod(shape)
    try:
        packed = zlib.decompress(base64.b64decode(str(value.get("data", "")), validate=True), bufsize=size // 8 + 1)
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"mask data is not {MASK_ENCODING}: {exc}") from exc
    if len(packed) != (size + 7) // 8:
        raise ValueError("mask data does not match its shape")
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=size)
    return bits.astype(bool).reshape(shape)


def _validate_mask(value: object) -> npt.NDArray[np.bool_]:
    if isinstance(value, dict):
        return _decode_mask(value)
    if not isinstance(value, np.ndarray):
        raise ValueError("mask must be a numpy array or an encoded mask object")
    if value.ndim != 3 or min(value.shape) < 1:
        raise ValueError("mask must be a non-empty 3D array (slices, rows, columns)")
    if value.dtype != np.bool_:
        if not np.issubdtype(value.dtype, np.integer) or not np.isin(value, (0, 1)).all():
            raise ValueError("mask must be boolean (or integers 0/1)")
        value = value.astype(bool)
    return value


def _serialize_mask(value: npt.NDArray[np.bool_]) -> dict[str, Any]:
    packed = np.packbits(value.ravel()).tobytes()
    return {
        "shape": [int(n) for n in value.shape],
        "encoding": MASK_ENCODING,
        "data": base64.b64encode(zlib.compress(packed, 6)).decode("ascii"),
    }


_MASK_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Boolean volume (slices, rows, columns): np.packbits (big bit order) of the C-order "
    "flattened mask, zlib-compressed, base64-encoded.",
    "properties": {
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 3, "maxItems": 3},
        "encoding": {"const": MASK_ENCODING},
        "data": {"type": "string", "contentEncoding": "base64"},
    },
    "required": ["shape", "encoding", "data"],
    "additionalProperties": False,
}

BoolMask = Annotated[
    npt.NDArray[np.bool_],
    PlainValidator(_validate_mask),
    PlainSerializer(_serialize_mask, when_used="json"),
    WithJsonSchema(_MASK_JSON_SCHEMA),
]


# --------------------------------------------------------------------------------------------
# regions


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Point2D(_Model):
    """A point on one image (SCOORD POINT)."""

    type: Literal["point"] = "point"
    sop_instance_uid: UID
    frame_number: FrameNumber | None = None
    x: FiniteFloat = Field(description="column, pixels from the left edge of the image")
    y: FiniteFloat = Field(description="row, pixels from the top edge of the image")


class BoundingBox(_Model):
    """An axis-aligned rectangle on one image (written as a closed SCOORD POLYLINE)."""

    type: Literal["box"] = "box"
    sop_instance_uid: UID
    frame_number: FrameNumber | None = None
    x_min: FiniteFloat
    y_min: FiniteFloat
    x_max: FiniteFloat
    y_max: FiniteFloat

    @model_validator(mode="after")
    def _ordered(self) -> BoundingBox:
        if self.x_max <= self.x_min or self.y_max <= self.y_min:
            raise ValueError("a box needs x_min < x_max and y_min < y_max")
        return self


class Polygon(_Model):
    """A closed polygon on one image (a closed SCOORD POLYLINE); the closing vertex is implied."""

    type: Literal["polygon"] = "polygon"
    sop_instance_uid: UID
    frame_number: FrameNumber | None = None
    points: list[tuple[FiniteFloat, FiniteFloat]] = Field(min_length=3, description="(x, y) vertices")


class Point3D(_Model):
    """A point in patient coordinates, LPS millimetres (SCOORD3D POINT)."""

    type: Literal["point3d"] = "point3d"
    x: FiniteFloat
    y: FiniteFloat
    z: FiniteFloat
    frame_of_reference_uid: UID

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.x, self.y, self.z)


Region = Annotated[Point2D | BoundingBox | Polygon | Point3D, Field(discriminator="type")]


# --------------------------------------------------------------------------------------------
# findings


class Measurement(_Model):
    """A numeric measurement with a UCUM unit (TID 300)."""

    name: Code
    value: FiniteFloat
    unit: Code

    @field_validator("unit")
    @classmethod
    def _ucum(cls, unit: Code) -> Code:
        if unit.scheme != "UCUM":
            raise ValueError("a measurement unit must be a UCUM code")
        return unit


class Classification(_Model):
    """A study-level statement: this concept applies with this probability."""

    code: Code
    probability: Probability


class Finding(_Model):
    """One localised observation (a lesion, a nodule ...) with its region and measurements."""

    code: Code
    probability: Probability | None = None
    label: str | None = Field(default=None, min_length=1, max_length=64, description="human-readable tracking id")
    finding_site: Code | None = None
    region: Region | None = None
    measurements: list[Measurement] = Field(default_factory=list)
    below_operating_point: bool = Field(
        default=False,
        description="a candidate shown for review although its probability is under the plugin's operating "
        "point: not a positive call (the SR marks it with a qualitative evaluation)",
    )

    def measurement(self, name: Code) -> Measurement | None:
        """The first measurement with this name (compared by value and scheme), if any."""
        return next((m for m in self.measurements if (m.name.value, m.name.scheme) == (name.value, name.scheme)), None)


class Segment(_Model):
    """One labelled binary mask (a DICOM SEG segment, PS3.3 C.8.20.4)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    label: str = Field(min_length=1, max_length=64)
    category: Code = Field(description="Segmented Property Category (CID 7150)")
    property_type: Code = Field(description="Segmented Property Type (CID 7151)")
    mask: BoolMask

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Segment):
            return NotImplemented
        return (self.label, self.category, self.property_type) == (
            other.label,
            other.category,
            other.property_type,
        ) and bool(np.array_equal(self.mask, other.mask))

    __hash__ = None  # type: ignore[assignment]


class Segmentation(_Model):
    """Masks aligned with one series volume: ``mask.shape == (slices, rows, columns)`` of that series."""

    series_uid: UID
    segments: list[Segment] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_shape(self) -> Segmentation:
        if len({s.mask.shape for s in self.segments}) != 1:
            raise ValueError("all segments of a segmentation must have the same shape")
        return self


class Findings(_Model):
    """Everything one plugin run says about one study."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    evaluated_series: list[UID] = Field(default_factory=list, description="series the plugin analysed")
    classifications: list[Classification] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    segmentations: list[Segmentation] = Field(default_factory=list)
    summary: str | None = Field(default=None, max_length=1024)

    def to_json(self, *, indent: int | None = None) -> str:
        """The JSON form (masks packed); ``Findings.from_json(f.to_json()) == f``."""
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, data: str | bytes) -> Findings:
        """Parse and validate; raises :class:`InvalidFindings` with a one-line reason."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "findings"
            raise InvalidFindings(
                f"invalid findings JSON ({exc.error_count()} error(s)); first at {where}: {first['msg']}"
            ) from exc

    @staticmethod
    def json_schema() -> dict[str, Any]:
        """The JSON Schema of the findings document (the one vendors answer with)."""
        schema = Findings.model_json_schema(mode="serialization")
        schema["$id"] = "https://cloudfilm.invalid/schemas/findings-1.0.json"
        return schema


def write_schema(path: Path = SCHEMA_PATH) -> None:
    """Regenerate the shipped schema file (run after changing the models)."""
    path.write_text(json.dumps(Findings.json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
