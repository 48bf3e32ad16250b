"""The cloudfilm plugin SDK: the only package a plugin imports.

A plugin subclasses :class:`Plugin`, reads the study through :class:`StudyInput` (series as
sorted, rescaled volumes plus their headers, loaded lazily) and returns :class:`Findings`, which
the archive turns into DICOM SR (TID 1500) and SEG objects stored in the same study.
"""

from ai_plugins.sdk import codes
from ai_plugins.sdk.codes import Code
from ai_plugins.sdk.findings import (
    SCHEMA_VERSION,
    BoundingBox,
    Classification,
    Finding,
    Findings,
    InvalidFindings,
    Measurement,
    Point2D,
    Point3D,
    Polygon,
    Region,
    Segment,
    Segmentation,
)
from ai_plugins.sdk.plugin import ENTRY_POINT_GROUP, Plugin, PluginInfo
from ai_plugins.sdk.study import (
    DatasetSource,
    InMemorySource,
    InstanceSource,
    Part10Source,
    SeriesInput,
    StudyInput,
)
from ai_plugins.sdk.summary import InputFilter, SeriesInfo, StudySummary
from ai_plugins.sdk.volume import Volume, VolumeError

__all__ = [
    "ENTRY_POINT_GROUP",
    "SCHEMA_VERSION",
    "BoundingBox",
    "Classification",
    "Code",
    "DatasetSource",
    "Finding",
    "Findings",
    "InMemorySource",
    "InputFilter",
    "InstanceSource",
    "InvalidFindings",
    "Measurement",
    "Part10Source",
    "Plugin",
    "PluginInfo",
    "Point2D",
    "Point3D",
    "Polygon",
    "Region",
    "Segment",
    "Segmentation",
    "SeriesInfo",
    "SeriesInput",
    "StudyInput",
    "StudySummary",
    "Volume",
    "VolumeError",
    "codes",
]
