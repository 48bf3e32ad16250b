"""The ``study`` a plugin receives: series listed up front, headers and pixels loaded on first use.

The runner hands :class:`StudyInput` an :class:`InstanceSource` that reads the archive (over
``pacs.retrieve``); tests and benchmarks use :meth:`StudyInput.from_datasets` or
:meth:`StudyInput.from_part10`. A plugin never sees the index or the object store.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import pydicom
from pydicom.dataset import Dataset

from ai_plugins.sdk.summary import InputFilter, SeriesInfo, StudySummary, series_info
from ai_plugins.sdk.volume import Volume, build_volume

__all__ = [
    "DatasetSource",
    "InMemorySource",
    "InstanceSource",
    "Part10Source",
    "SeriesInput",
    "StudyInput",
]


@runtime_checkable
class InstanceSource(Protocol):
    """Where a study's instances come from (the runner implements it over the archive)."""

    def list_series(self) -> Sequence[SeriesInfo]:
        """Every series of the study, without reading any instance."""
        ...

    def read_instances(self, series_uid: str) -> Sequence[bytes]:
        """The Part 10 bytes of every instance of one series (any order)."""
        ...


@runtime_checkable
class DatasetSource(InstanceSource, Protocol):
    """A source that already holds parsed datasets and can skip the bytes round trip."""

    def read_datasets(self, series_uid: str) -> Sequence[Dataset]: ...


def _group(datasets: Iterable[Dataset]) -> tuple[str, dict[str, list[Dataset]]]:
    by_series: dict[str, list[Dataset]] = {}
    studies: set[str] = set()
    for ds in datasets:
        studies.add(str(ds.StudyInstanceUID))
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    if len(studies) != 1:
        raise ValueError(f"instances must belong to exactly one study, got {len(studies)}")
    return studies.pop(), by_series


class InMemorySource:
    """A :class:`DatasetSource` over datasets already in memory."""

    def __init__(self, datasets: Iterable[Dataset]) -> None:
        self.study_uid, self._series = _group(datasets)

    def list_series(self) -> list[SeriesInfo]:
        return [series_info(uid, dss) for uid, dss in self._series.items()]

    def read_datasets(self, series_uid: str) -> list[Dataset]:
        return list(self._series[series_uid])

    def read_instances(self, series_uid: str) -> list[bytes]:
        out = []
        for ds in self._series[series_uid]:
            buf = io.BytesIO()
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
            out.append(buf.getvalue())
        return out


class Part10Source:
    """An :class:`InstanceSource` over Part 10 byte strings (as the archive would return them)."""

    def __init__(self, blobs: Iterable[bytes]) -> None:
        self._blobs: dict[str, list[bytes]] = {}
        headers: list[Dataset] = []
        for blob in blobs:
            ds = pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True)
            headers.append(ds)
            self._blobs.setdefault(str(ds.SeriesInstanceUID), []).append(blob)
        self.study_uid, self._headers = _group(headers)

    def list_series(self) -> list[SeriesInfo]:
        return [series_info(uid, dss) for uid, dss in self._headers.items()]

    def read_instances(self, series_uid: str) -> list[bytes]:
        return list(self._blobs[series_uid])


class SeriesInput:
    """One series: its summary now, its headers and volume when first asked for."""

    def __init__(self, info: SeriesInfo, source: InstanceSource) -> None:
        self.info = info
        self._source = source
        self._datasets: list[Dataset] | None = None
        self._volume: Volume | None = None

    @property
    def series_uid(self) -> str:
        return self.info.series_uid

    @property
    def modality(self) -> str:
        return self.info.modality

    @property
    def datasets(self) -> list[Dataset]:
        """The instances as pydicom datasets (pixel data still encoded), loaded on first access."""
        if self._datasets is None:
            if isinstance(self._source, DatasetSource):
                self._datasets = list(self._source.read_datasets(self.series_uid))
            else:
                self._datasets = [pydicom.dcmread(io.BytesIO(b)) for b in self._source.read_instances(self.series_uid)]
        return self._datasets

    @property
    def volume(self) -> Volume:
        """The series as a sorted, rescaled float32 volume (see :mod:`ai_plugins.sdk.volume`)."""
        if self._volume is None:
            self._volume = build_volume(self.datasets)
        return self._volume

    def release(self) -> None:
        """Drop the loaded headers and volume (they load again on next access)."""
        self._datasets = None
        self._volume = None

    def __repr__(self) -> str:
        i = self.info
        return f"SeriesInput({i.series_uid!r}, {i.modality}, {i.n_slices} slices, {i.description!r})"


class StudyInput:
    """The argument of ``Plugin.run``: one study, its series loaded lazily."""

    def __init__(self, study_uid: str, source: InstanceSource) -> None:
        self.study_uid = study_uid
        self._source = source
        self._series: list[SeriesInput] | None = None

    @classmethod
    def from_datasets(cls, datasets: Iterable[Dataset]) -> StudyInput:
        """A study over in-memory datasets (tests, benchmarks)."""
        source = InMemorySource(datasets)
        return cls(source.study_uid, source)

    @classmethod
    def from_part10(cls, blobs: Iterable[bytes]) -> StudyInput:
        """A study over Part 10 bytes, parsed on demand like the archive's retrieve path."""
        source = Part10Source(blobs)
        return cls(source.study_uid, source)

    @property
    def series(self) -> list[SeriesInput]:
        if self._series is None:
            infos = sorted(
                self._source.list_series(),
                key=lambda s: (s.series_number if s.series_number is not None else 1 << 31, s.series_uid),
            )
            self._series = [SeriesInput(info, self._source) for info in infos]
        return self._series

    @property
    def summary(self) -> StudySummary:
        return StudySummary(study_uid=self.study_uid, series=tuple(s.info for s in self.series))

    def get_series(self, series_uid: str) -> SeriesInput:
        for s in self.series:
            if s.series_uid == series_uid:
                return s
        raise KeyError(series_uid)

    def select(self, input_filter: InputFilter) -> list[SeriesInput]:
        """The series meeting every criterion of ``input_filter``, most slices first."""
        chosen = [s for s in self.series if input_filter.accepts_series(s.info)]
        return sorted(chosen, key=lambda s: -s.info.n_slices)

    def datasets(self, series_uids: Iterable[str] | None = None) -> list[Dataset]:
        """Headers of the given series (default: all), e.g. as evidence for an SR."""
        wanted = None if series_uids is None else set(series_uids)
        return [ds for s in self.series if wanted is None or s.series_uid in wanted for ds in s.datasets]
