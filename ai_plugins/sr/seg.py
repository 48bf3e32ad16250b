"""Segmentation masks → DICOM SEG (binary, PS3.3 A.51) with highdicom, a new series in the study.

The masks are aligned with the series volume as the SDK presents it (slices sorted along the
normal), so the source images are that volume's slices in the same order; for a multi-frame
source the slices are put back in the instance's frame order. Each segment records the plugin as
an automatic algorithm (Algorithm Identification, PS3.3 C.8.20.2: name, version, vendor as source).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.sr.codedict import codes as dcm_codes

from ai_plugins.sdk import PluginInfo, Segmentation, Volume
from ai_plugins.sr.tid1500 import MANUFACTURER, to_dicom_code

__all__ = ["SEG_SERIES_NUMBER", "build_segmentation"]

SEG_SERIES_NUMBER = 9200


def _algorithm(plugin: PluginInfo) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=plugin.name,
        family=dcm_codes.cid7162.ArtificialIntelligence,
        version=plugin.version,
        source=plugin.vendor,
        parameters={"sha256": plugin.package_digest} if plugin.package_digest else None,
    )


def _frames_in_source_order(volume: Volume, stacked: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Masks of a single multi-frame source, re-ordered to its frame numbers (missing frames empty)."""
    source = volume.datasets[0]
    n_frames = int(source.get("NumberOfFrames", 1) or 1)
    out = np.zeros((n_frames, *stacked.shape[1:]), dtype=bool)
    for k, frame in enumerate(volume.frame_numbers):
        if frame is not None:
            out[frame - 1] = stacked[k]
    return out


def build_segmentation(
    segmentation: Segmentation,
    volume: Volume,
    plugin: PluginInfo,
    *,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = SEG_SERIES_NUMBER,
    instance_number: int = 1,
) -> hd.seg.Segmentation:
    """A binary SEG of every segment of ``segmentation`` over ``volume`` (the series it is aligned to)."""
    shape = volume.shape
    for segment in segmentation.segments:
        if segment.mask.shape != shape:
            raise ValueError(f"segment {segment.label!r} has shape {segment.mask.shape}, the series volume {shape}")
    algorithm = _algorithm(plugin)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=segment.label,
            segmented_property_category=to_dicom_code(segment.category),
            segmented_property_type=to_dicom_code(segment.property_type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=segment.label,
        )
        for n, segment in enumerate(segmentation.segments, start=1)
    ]
    stacked = np.stack([s.mask for s in segmentation.segments], axis=-1)
    multiframe_source = len({id(ds) for ds in volume.datasets}) == 1 and volume.frame_numbers[0] is not None
    if multiframe_source:
        source_images = [volume.datasets[0]]
        pixels = _frames_in_source_order(volume, stacked)
    else:
        source_images = list(volume.datasets)
        pixels = stacked
    return hd.seg.Segmentation(
        source_images=source_images,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=plugin.name,
        software_versions=plugin.version,
        device_serial_number=plugin.key,
        series_description=f"AI {plugin.key} segmentation"[:64],
        content_label="AI_SEG",
        content_description=f"{plugin.key} by {plugin.vendor}"[:64],
    )
