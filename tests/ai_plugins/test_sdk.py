"""The plugin SDK: lazy study input, volumes, the input filter, findings and their JSON form."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

from ai_plugins.sdk import (
    BoundingBox,
    Classification,
    Code,
    Finding,
    Findings,
    InputFilter,
    InvalidFindings,
    Measurement,
    Plugin,
    PluginInfo,
    Point2D,
    Point3D,
    Polygon,
    Segment,
    Segmentation,
    SeriesInfo,
    StudyInput,
    StudySummary,
    VolumeError,
    codes,
)
from ai_plugins.sdk.findings import SCHEMA_PATH
from ai_plugins.sdk.study import InMemorySource
from tests.factories import (
    CT_IMAGE_STORAGE,
    Lesion,
    make_ct_case,
    make_multiframe,
    make_rgb,
    to_bytes,
)

LESION = Lesion((20.0, -30.0, 5.0), 25.0)


class CountingSource(InMemorySource):
    """An in-memory source that counts reads (to prove loading is lazy)."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        super().__init__(datasets)
        self.reads: list[str] = []

    def read_datasets(self, series_uid: str) -> list[Dataset]:
        self.reads.append(series_uid)
        return super().read_datasets(series_uid)


def test_series_load_lazily_and_once() -> None:
    case = make_ct_case(series_count=2, n_slices=10, rows=32, cols=32)
    source = CountingSource(case.datasets)
    study = StudyInput(source.study_uid, source)
    assert [s.series_uid for s in study.series] == case.series_uids
    assert [s.info.series_number for s in study.series] == [1, 2]
    assert source.reads == []
    _ = study.series[1].volume
    _ = study.series[1].datasets
    assert source.reads == [case.series_uids[1]]
    study.series[1].release()
    _ = study.series[1].datasets
    assert source.reads == [case.series_uids[1]] * 2


def test_volume_sorted_by_position_with_hounsfield_units() -> None:
    case = make_ct_case(n_slices=12, rows=48, cols=48, lesion=LESION, seed=3)
    shuffled = list(case.datasets)
    random.Random(1).shuffle(shuffled)
    volume = StudyInput.from_datasets(shuffled).series[0].volume
    assert volume.shape == (12, 48, 48)
    assert volume.array.dtype == np.float32
    assert np.all(np.diff(volume.positions) > 0)
    z = [float(ds.ImagePositionPatient[2]) for ds in case.datasets]
    assert volume.positions.tolist() == pytest.approx(sorted(z))
    assert volume.spacing[0] == pytest.approx(abs(z[1] - z[0]))
    assert volume.spacing[1:] == pytest.approx([float(v) for v in case.datasets[0].PixelSpacing])
    assert volume.units == "HU"
    # the slice at index k is the instance whose position is the k-th smallest
    by_z = sorted(case.datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert volume.sop_instance_uids == tuple(str(ds.SOPInstanceUID) for ds in by_z)
    assert volume.frame_of_reference_uid == str(case.datasets[0].FrameOfReferenceUID)
    # rescale applied: air about -1000 HU, the lesion centre about its 160 HU
    assert float(volume.array[0, 0, 0]) == pytest.approx(-1000, abs=60)
    k, i, j = np.round(volume.patient_to_index(LESION.center_mm)).astype(int)
    assert float(volume.array[k, i - 1 : i + 2, j - 1 : j + 2].mean()) == pytest.approx(160, abs=25)


def test_index_patient_round_trip_and_affine() -> None:
    case = make_ct_case(n_slices=8, rows=32, cols=32)
    volume = StudyInput.from_datasets(case.datasets).series[0].volume
    first = min(case.datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert volume.index_to_patient([0, 0, 0]).tolist() == pytest.approx([float(v) for v in first.ImagePositionPatient])
    points = np.array([[0.0, 0.0, 0.0], [3.5, 10.25, 7.0], [7.0, 31.0, 31.0]])
    patient = volume.index_to_patient(points)
    assert volume.patient_to_index(patient) == pytest.approx(points)
    homogeneous = np.c_[points, np.ones(len(points))] @ volume.affine.T
    assert homogeneous[:, :3] == pytest.approx(patient)


def test_signed_and_compressed_pixels_give_the_same_hounsfield_units() -> None:
    plain = make_ct_case(n_slices=6, rows=32, cols=32, seed=9)
    signed = make_ct_case(n_slices=6, rows=32, cols=32, seed=9, signed=True)
    rle = make_ct_case(n_slices=6, rows=32, cols=32, seed=9, transfer_syntax=RLELossless)
    ref = StudyInput.from_datasets(plain.datasets).series[0].volume.array
    # unsigned storage clips at -1024 HU (stored 0); signed storage keeps the noise below it
    signed_hu = StudyInput.from_datasets(signed.datasets).series[0].volume.array
    assert np.array_equal(np.maximum(signed_hu, -1024.0), ref)
    from_bytes = StudyInput.from_part10([to_bytes(ds) for ds in rle.datasets])
    assert np.array_equal(from_bytes.series[0].volume.array, ref)


def test_enhanced_multiframe_ct_uses_its_functional_groups() -> None:
    case = make_ct_case(n_slices=10, rows=32, cols=32, seed=4)
    single = StudyInput.from_datasets(case.datasets).series[0].volume
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=case.datasets,
        series_instance_uid=hd.UID(),
        series_number=7,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    volume = StudyInput.from_datasets([enhanced]).series[0].volume
    assert volume.shape == single.shape
    assert np.array_equal(volume.array, single.array)
    assert volume.positions == pytest.approx(single.positions)
    assert sorted(f for f in volume.frame_numbers if f is not None) == list(range(1, 11))


def test_images_without_geometry_follow_instance_order() -> None:
    volume = StudyInput.from_datasets([make_multiframe(n_frames=5, rows=16, cols=16)]).series[0].volume
    assert volume.shape == (5, 16, 16)
    assert not volume.has_geometry
    assert [int(volume.array[f, 0, 0]) for f in range(5)] == [0, 1, 2, 3, 4]


def test_colour_series_is_not_a_volume() -> None:
    with pytest.raises(VolumeError):
        _ = StudyInput.from_datasets([make_rgb()]).series[0].volume


# --------------------------------------------------------------------------------------------
# input filter


def _series(modality: str = "CT", body_part: str = "CHEST", n: int = 20) -> SeriesInfo:
    return SeriesInfo(
        series_uid="1.2.3",
        modality=modality,
        n_instances=n,
        body_part=body_part,
        sop_class_uids=frozenset({CT_IMAGE_STORAGE}),
    )


@pytest.mark.parametrize(
    ("flt", "series", "expected"),
    [
        (InputFilter(), _series(), True),
        (InputFilter(modalities=("ct",)), _series(), True),
        (InputFilter(modalities=("MR",)), _series(), False),
        (InputFilter(body_parts=("chest", "abdomen")), _series(), True),
        (InputFilter(body_parts=("HEAD",)), _series(), False),
        (InputFilter(body_parts=("HEAD",)), _series(body_part=""), True),
        (InputFilter(body_parts=("HEAD",), require_body_part=True), _series(body_part=""), False),
        (InputFilter(sop_classes=(CT_IMAGE_STORAGE,)), _series(), True),
        (InputFilter(sop_classes=("1.2.840.10008.5.1.4.1.1.4",)), _series(), False),
        (InputFilter(min_slices=20), _series(n=20), True),
        (InputFilter(min_slices=21), _series(n=20), False),
    ],
)
def test_input_filter(flt: InputFilter, series: SeriesInfo, expected: bool) -> None:
    summary = StudySummary(study_uid="1.2", series=(series,))
    assert flt.matches(summary) is expected
    assert bool(flt.matching_series(summary)) is expected


def test_filter_needs_one_series_meeting_every_criterion() -> None:
    summary = StudySummary("1.2", (_series("MR", n=50), _series("CT", n=5)))
    assert not InputFilter(modalities=("CT",), min_slices=10).matches(summary)
    assert InputFilter(modalities=("CT",), min_slices=5).matches(summary)
    case = make_ct_case(n_slices=9, rows=16, cols=16)
    study = StudyInput.from_datasets(case.datasets)
    assert study.summary == StudySummary.from_datasets(case.datasets)
    assert InputFilter(modalities=("CT",), body_parts=("CHEST",), min_slices=9).matches(study.summary)
    assert study.select(InputFilter(min_slices=10)) == []
    round_tripped = InputFilter.model_validate_json(InputFilter(modalities=("CT",)).model_dump_json())
    assert round_tripped == InputFilter(modalities=("CT",))


class _Incomplete(Plugin):
    name = "incomplete"

    def run(self, study: StudyInput) -> Findings:
        return Findings()


class _Complete(_Incomplete):
    version = "0.1"
    vendor = "ACME Imaging"
    input_filter = InputFilter(modalities=("MR",))


def test_plugin_metadata() -> None:
    with pytest.raises(ValueError, match="version"):
        _Incomplete()
    plugin = _Complete()
    info = plugin.info()
    assert info == PluginInfo(
        name="incomplete", version="0.1", vendor="ACME Imaging", input_filter=InputFilter(modalities=("MR",))
    )
    assert info.key == "incomplete@0.1"
    assert not plugin.accepts(StudySummary("1.2", (_series("CT"),)))
    with pytest.raises(ValueError):
        PluginInfo(name="Bad Name", version="1", vendor="x")


# --------------------------------------------------------------------------------------------
# findings


def _findings() -> Findings:
    mask = np.zeros((4, 8, 8), dtype=bool)
    mask[1:3, 2:5, 3:7] = True
    return Findings(
        evaluated_series=["1.2.3.4"],
        classifications=[Classification(code=codes.HIGH_DENSITY_LESION, probability=0.87)],
        findings=[
            Finding(
                code=codes.NODULE,
                probability=0.8,
                label="Lesion 1",
                finding_site=Code(value="39607008", scheme="SCT", meaning="Lung"),
                region=Point3D(x=1.5, y=-2.25, z=30.0, frame_of_reference_uid="1.2.3.9"),
                measurements=[Measurement(name=codes.DIAMETER, value=12.5, unit=codes.UCUM_MM)],
            ),
            Finding(code=codes.MASS, region=Point2D(sop_instance_uid="1.2.3.4.5", x=10.5, y=20.5)),
            Finding(
                code=codes.MASS,
                region=BoundingBox(sop_instance_uid="1.2.3.4.5", frame_number=2, x_min=1, y_min=2, x_max=3, y_max=4),
            ),
            Finding(code=codes.LESION, region=Polygon(sop_instance_uid="1.2.3.4.6", points=[(0, 0), (4, 0), (2, 3)])),
        ],
        segmentations=[
            Segmentation(
                series_uid="1.2.3.4",
                segments=[
                    Segment(
                        label="Lesion 1",
                        category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                        property_type=codes.NODULE,
                        mask=mask,
                    )
                ],
            )
        ],
        summary="test",
    )  # fmt: skip


def test_findings_json_round_trip_with_masks() -> None:
    findings = _findings()
    text = findings.to_json()
    data = json.loads(text)
    assert data["schema_version"] == "1.0"
    assert data["findings"][0]["region"]["type"] == "point3d"
    assert data["segmentations"][0]["segments"][0]["mask"]["shape"] == [4, 8, 8]
    back = Findings.from_json(text)
    assert back == findings
    assert np.array_equal(back.segmentations[0].segments[0].mask, findings.segmentations[0].segments[0].mask)
    assert back.findings[0].measurement(codes.DIAMETER) == Measurement(
        name=codes.DIAMETER, value=12.5, unit=codes.UCUM_MM
    )


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["classifications"][0].update(probability=1.5), "classifications.0.probability"),
        (lambda d: d["findings"][0]["region"].update(type="circle"), "findings.0.region"),
        (lambda d: d["findings"][0]["measurements"][0]["unit"].update(scheme="DCM"), "findings.0.measurements.0.unit"),
        (lambda d: d["findings"][1]["region"].update(sop_instance_uid="1.2.x"), "findings.1.region"),
        (lambda d: d["segmentations"][0]["segments"][0]["mask"].update(data="AAAA"), "segmentations.0"),
        (lambda d: d.update(schema_version="2.0"), "schema_version"),
        (lambda d: d.update(unexpected=1), "unexpected"),
    ],
)
def test_invalid_findings_json_is_refused_with_a_reason(mutate: object, where: str) -> None:
    data = json.loads(_findings().to_json())
    assert callable(mutate)
    mutate(data)
    with pytest.raises(InvalidFindings, match=where.replace(".", r"\.")):
        Findings.from_json(json.dumps(data))


def test_shipped_schema_matches_the_models() -> None:
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == Findings.json_schema()
