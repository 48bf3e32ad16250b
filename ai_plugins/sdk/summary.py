"""What the archive knows about a study before any pixel is read, and the input filter over it.

The router decides from a :class:`StudySummary` (built from the index) whether a plugin's
:class:`InputFilter` matches; the same filter picks the series a plugin should analyse.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydicom.dataset import Dataset

__all__ = ["InputFilter", "SeriesInfo", "StudySummary"]


@dataclass(frozen=True)
class SeriesInfo:
    """Series-level facts (from the index): enough to route, nothing that needs the pixels."""

    series_uid: str
    modality: str
    n_instances: int
    series_number: int | None = None
    description: str = ""
    body_part: str = ""
    sop_class_uids: frozenset[str] = field(default_factory=frozenset)
    n_frames: int | None = None
    """Total frames when known (multi-frame instances); ``None`` means one frame per instance."""

    @property
    def n_slices(self) -> int:
        """Frames if known, else instances: what the filter's ``min_slices`` compares against."""
        return self.n_frames if self.n_frames is not None else self.n_instances


@dataclass(frozen=True)
class StudySummary:
    """One study as the router sees it."""

    study_uid: str
    series: tuple[SeriesInfo, ...]

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(s.modality for s in self.series)

    @classmethod
    def from_datasets(cls, datasets: Iterable[Dataset]) -> StudySummary:
        """Summarise datasets of one study (tests, the in-memory source)."""
        by_series: dict[str, list[Dataset]] = {}
        study_uids: set[str] = set()
        for ds in datasets:
            study_uids.add(str(ds.StudyInstanceUID))
            by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
        if len(study_uids) != 1:
            raise ValueError(f"datasets must belong to exactly one study, got {len(study_uids)}")
        return cls(study_uid=study_uids.pop(), series=tuple(series_info(uid, dss) for uid, dss in by_series.items()))


def series_info(series_uid: str, datasets: Sequence[Dataset]) -> SeriesInfo:
    """A :class:`SeriesInfo` computed from the series' own headers."""
    first = datasets[0]
    frames = [int(ds.get("NumberOfFrames", 1) or 1) for ds in datasets]
    number = first.get("SeriesNumber")
    return SeriesInfo(
        series_uid=series_uid,
        modality=str(first.get("Modality", "")),
        n_instances=len(datasets),
        series_number=int(number) if number not in (None, "") else None,
        description=str(first.get("SeriesDescription", "")),
        body_part=str(first.get("BodyPartExamined", "")),
        sop_class_uids=frozenset(str(ds.SOPClassUID) for ds in datasets if "SOPClassUID" in ds),
        n_frames=sum(frames) if any(f > 1 for f in frames) else None,
    )


def _upper_sorted(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({v.strip().upper() for v in values if v.strip()}))


class InputFilter(BaseModel):
    """Which studies a plugin wants: every non-empty criterion must hold for at least one series.

    ``body_parts`` compares with BodyPartExamined (PS3.16 Annex L terms, case-insensitive); a
    series without one passes unless ``require_body_part`` is set, because many modalities leave
    it empty.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    modalities: tuple[str, ...] = Field(default=(), description="e.g. ['CT']; empty = any")
    body_parts: tuple[str, ...] = Field(default=(), description="e.g. ['CHEST', 'ABDOMEN']; empty = any")
    sop_classes: tuple[str, ...] = Field(default=(), description="SOP Class UIDs; empty = any")
    min_slices: int = Field(default=1, ge=1, description="frames (or instances) the series needs at least")
    require_body_part: bool = False

    @field_validator("modalities", "body_parts")
    @classmethod
    def _normalise(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _upper_sorted(values)

    @field_validator("sop_classes")
    @classmethod
    def _sorted(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted({v.strip() for v in values if v.strip()}))

    def accepts_series(self, series: SeriesInfo) -> bool:
        if self.modalities and series.modality.upper() not in self.modalities:
            return False
        if self.body_parts:
            part = series.body_part.strip().upper()
            if part and part not in self.body_parts:
                return False
            if not part and self.require_body_part:
                return False
        if self.sop_classes and not (series.sop_class_uids & set(self.sop_classes)):
            return False
        return series.n_slices >= self.min_slices

    def matching_series(self, summary: StudySummary) -> list[SeriesInfo]:
        return [s for s in summary.series if self.accepts_series(s)]

    def matches(self, summary: StudySummary) -> bool:
        """True when at least one series of the study meets every criterion."""
        return any(self.accepts_series(s) for s in summary.series)
