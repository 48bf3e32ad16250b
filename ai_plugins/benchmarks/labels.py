"""Ground-truth labels: the schema of each task, and CSV/JSON import validated line by line.

A label file either imports whole or not at all: every unknown study, missing or mistyped value,
and study labelled twice is collected and reported in one error that names each bad line.

Formats (``study_uid`` is the StudyInstanceUID of a case already in the benchmark):

- classification — CSV ``study_uid,label`` or JSON ``[{"study_uid": …, "label": "positive"}]``;
  the label is one of the schema's ``classes``.
- detection — CSV ``study_uid,x_mm,y_mm,z_mm,radius_mm``, one row per lesion and a row with the
  four numbers empty for a study without lesions; or JSON ``[{"study_uid": …, "lesions":
  [{"center_mm": [x, y, z], "radius_mm": r}]}]``. Coordinates are patient LPS millimetres.
- segmentation — JSON only: ``[{"study_uid": …, "series_uid": …, "mask": {"shape": [z, y, x],
  "encoding": "zlib+packbits+base64", "data": …}, "spacing_mm": [dz, dy, dx]}]`` (the mask
  encoding of the plugin SDK; spacing defaults to the series' own).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ai_plugins.benchmarks.errors import InvalidBenchmarkData
from ai_plugins.sdk.codes import Code
from ai_plugins.sdk.findings import BoolMask

__all__ = ["LabelSchema", "Task", "decode_mask", "encode_mask", "is_positive", "parse_labels", "stratum_of"]

SpacingLookup = Callable[[str, str], tuple[float, float, float] | None]


class Task(StrEnum):
    CLASSIFICATION = "classification"  # one label per study; plugins answer a probability
    DETECTION = "detection"  # lesion points; plugins answer scored points
    SEGMENTATION = "segmentation"  # one mask per study; plugins answer segment masks


#: Metrics each task reports; the first is the leaderboard's main metric unless the benchmark says otherwise.
TASK_METRICS: dict[Task, tuple[str, ...]] = {
    Task.CLASSIFICATION: ("auc", "sensitivity", "specificity", "ppv", "npv", "accuracy", "f1"),
    Task.DETECTION: ("froc_mean_sensitivity", "sensitivity_at_0.5", "sensitivity_at_1", "sensitivity_at_2",
                     "sensitivity_at_4", "study_auc"),
    Task.SEGMENTATION: ("dice", "hd95"),
}  # fmt: skip


class LabelSchema(BaseModel):
    """What a benchmark's labels mean, and which plugin output is scored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    classes: tuple[str, ...] = Field(default=("negative", "positive"), min_length=2, max_length=2)
    positive: str = "positive"
    code: Code | None = Field(default=None, description="the plugin classification scored (default: the first)")

    @model_validator(mode="after")
    def _positive_is_a_class(self) -> LabelSchema:
        if self.positive not in self.classes:
            raise ValueError(f"positive class {self.positive!r} is not one of {', '.join(self.classes)}")
        if any(not c.strip() or len(c) > 64 for c in self.classes) or len(set(self.classes)) != 2:
            raise ValueError("classes are two different names of 1 to 64 characters")
        return self


def stratum_of(task: Task, schema: LabelSchema, label: dict[str, Any]) -> str:
    """The split stratum of a label: the class, whether lesions exist, whether the mask is empty."""
    if task is Task.CLASSIFICATION:
        return str(label["label"])
    if task is Task.DETECTION:
        return "lesion" if label.get("lesions") else "none"
    return "mask" if label.get("voxels", 0) else "empty"


def is_positive(task: Task, schema: LabelSchema, label: dict[str, Any]) -> bool:
    if task is Task.CLASSIFICATION:
        return bool(label["label"] == schema.positive)
    return stratum_of(task, schema, label) in ("lesion", "mask")


class _Mask(BaseModel):
    """A mask in the plugin SDK's JSON encoding (``zlib+packbits+base64``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    mask: BoolMask


def decode_mask(encoded: object) -> npt.NDArray[np.bool_]:
    """A boolean ``(slices, rows, columns)`` mask from its JSON encoding."""
    return _Mask.model_validate({"mask": encoded}).mask


def encode_mask(mask: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """The JSON encoding of a boolean mask."""
    return dict(_Mask(mask=mask).model_dump(mode="json")["mask"])


# --- parsing -----------------------------------------------------------------------------------


def parse_labels(task: Task, schema: LabelSchema, content: str, *, fmt: str, known: set[str],
                 spacing_of: SpacingLookup | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every label of ``content`` by study, validated; :class:`InvalidBenchmarkData` naming each bad line."""
    if fmt not in ("csv", "json"):
        raise InvalidBenchmarkData("labels are uploaded as CSV or JSON")
    if task is Task.SEGMENTATION and fmt == "csv":
        raise InvalidBenchmarkData("segmentation labels are uploaded as JSON (masks do not fit in CSV)")
    problems: list[str] = []
    items = _csv_items(task, content, problems) if fmt == "csv" else _json_items(content, problems)
    labels: dict[str, dict[str, Any]] = {}
    first_seen: dict[str, str] = {}
    for where, raw in items:
        uid = str(raw.get("study_uid", "") or "").strip()
        if not uid:
            problems.append(f"{where}: study_uid is missing")
            continue
        if uid not in known:
            problems.append(f"{where}: study {uid} is not in this benchmark")
            continue
        try:
            label = _label(task, schema, raw, spacing_of)
        except (ValueError, TypeError, KeyError, ValidationError) as exc:
            problems.append(f"{where}: {_reason(exc)}")
            continue
        if uid in labels and not (task is Task.DETECTION and raw.get("_row")):
            problems.append(f"{where}: study {uid} is labelled twice (first on {first_seen[uid]})")
            continue
        if uid in labels:  # another lesion row of a detection CSV
            if not label["lesions"] or not labels[uid]["lesions"]:
                problems.append(f"{where}: study {uid} has a row without a lesion and rows with lesions")
                continue
            labels[uid]["lesions"].extend(label["lesions"])
            continue
        labels[uid] = label
        first_seen[uid] = where
    if not labels and not problems:
        problems.append("the file holds no labels")
    if problems:
        raise InvalidBenchmarkData("the labels were not imported", problems)
    return labels


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        return f"{where + ': ' if where else ''}{message}"
    if isinstance(exc, KeyError):
        return f"{exc.args[0]} is missing"
    return str(exc) or type(exc).__name__


def _csv_items(task: Task, content: str, problems: list[str]) -> Iterable[tuple[str, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(content.lstrip("\ufeff")))
    rows = list(reader)
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    wanted = ["study_uid", "label"] if task is Task.CLASSIFICATION else ["study_uid", "x_mm", "y_mm", "z_mm",
                                                                         "radius_mm"]  # fmt: skip
    missing = [w for w in wanted if w not in header]
    if missing:
        problems.append(f"line 1: the header lacks {', '.join(missing)} (expected {','.join(wanted)})")
        return []
    out: list[tuple[str, dict[str, Any]]] = []
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(f"line {n}: {len(row)} fields where the header has {len(header)}")
            continue
        values = {h: cell.strip() for h, cell in zip(header, row, strict=True)}
        if task is Task.DETECTION:
            coords = [values[k] for k in wanted[1:]]
            if all(not c for c in coords):
                out.append((f"line {n}", {"study_uid": values["study_uid"], "lesions": [], "_row": True}))
                continue
            lesion = {"center_mm": coords[:3], "radius_mm": coords[3]}
            out.append((f"line {n}", {"study_uid": values["study_uid"], "lesions": [lesion], "_row": True}))
        else:
            out.append((f"line {n}", values))
    return out


def _json_items(content: str, problems: list[str]) -> Iterable[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(content)
    except ValueError as exc:
        problems.append(f"the file is not JSON: {exc}")
        return []
    if isinstance(data, dict) and isinstance(data.get("labels"), list):
        data = data["labels"]
    if not isinstance(data, list):
        problems.append('the JSON must be a list of labels (or {"labels": [...]})')
        return []
    out: list[tuple[str, dict[str, Any]]] = []
    for n, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            problems.append(f"item {n}: not an object")
            continue
        out.append((f"item {n}", {k: v for k, v in item.items() if k != "_row"}))
    return out


def _number(value: object, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, not {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number")
    return number


def _label(task: Task, schema: LabelSchema, raw: dict[str, Any], spacing_of: SpacingLookup | None) -> dict[str, Any]:
    if task is Task.CLASSIFICATION:
        value = raw.get("label")
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("the label is missing")
        text = str(value).strip()
        if text not in schema.classes:
            raise ValueError(f"label {text!r} is not one of {', '.join(schema.classes)}")
        return {"label": text}
    if task is Task.DETECTION:
        lesions = raw.get("lesions")
        if not isinstance(lesions, list):
            raise ValueError("lesions must be a list (empty for a study without lesions)")
        out = []
        for i, lesion in enumerate(lesions, start=1):
            if not isinstance(lesion, dict):
                raise ValueError(f"lesion {i} is not an object")
            center = lesion.get("center_mm")
            if not isinstance(center, list | tuple) or len(center) != 3:
                raise ValueError(f"lesion {i}: center_mm must be three numbers [x, y, z]")
            xyz = [_number(v, f"lesion {i} {axis}") for v, axis in zip(center, "xyz", strict=True)]
            radius = _number(lesion.get("radius_mm"), f"lesion {i} radius_mm")
            if radius <= 0:
                raise ValueError(f"lesion {i}: radius_mm must be positive")
            out.append({"center_mm": [round(v, 4) for v in xyz], "radius_mm": round(radius, 4)})
        return {"lesions": out}
    return _segmentation_label(raw, spacing_of)


def _segmentation_label(raw: dict[str, Any], spacing_of: SpacingLookup | None) -> dict[str, Any]:
    series_uid = str(raw.get("series_uid", "") or "")
    if not series_uid:
        raise ValueError("series_uid is missing")
    mask = decode_mask(raw.get("mask"))
    spacing = raw.get("spacing_mm")
    if spacing is None and spacing_of is not None:
        spacing = spacing_of(str(raw["study_uid"]), series_uid)
    if not isinstance(spacing, list | tuple) or len(spacing) != 3:
        raise ValueError("spacing_mm must be three numbers [dz, dy, dx] (the series has no usable geometry)")
    mm = [_number(v, "spacing_mm") for v in spacing]
    if min(mm) <= 0:
        raise ValueError("spacing_mm must be positive")
    return {"series_uid": series_uid, "mask": encode_mask(mask), "spacing_mm": mm, "voxels": int(mask.sum())}
