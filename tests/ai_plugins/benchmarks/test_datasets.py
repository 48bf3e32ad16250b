"""Benchmark datasets: versions, label import and validation, stratified seeded splits, dev copies."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from ai_plugins.benchmarks.errors import InvalidBenchmarkData
from ai_plugins.benchmarks.labels import LabelSchema, Task, decode_mask, encode_mask, parse_labels
from ai_plugins.benchmarks.service import BenchmarkService
from ai_plugins.benchmarks.splits import assign_splits
from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import Conflict
from pacs.query import Level, QueryRequest, run_query
from pacs.retrieve import find_instances, open_instance
from pacs.stability import StudyStability, stability_of
from tests.ai_plugins.benchmarks.conftest import lesion_csv
from tests.factories import CtCase


def _service(archive: Archive) -> BenchmarkService:
    return BenchmarkService(archive, use_entry_points=False)


def test_every_change_is_a_new_version_identified_by_its_content(bench_archive: Archive,
                                                                 small_cases: list[CtCase]) -> None:  # fmt: skip
    service = _service(bench_archive)
    bench = service.create(name="lesions", task="detection", created_by="admin")
    assert bench.current is None and bench.main_metric == "froc_mean_sensitivity"
    with pytest.raises(Conflict):
        service.create(name="lesions", task="detection", created_by="admin")
    with pytest.raises(InvalidBenchmarkData, match="task must be one of"):
        service.create(name="other", task="ranking", created_by="admin")
    half = [c.study_uid for c in small_cases[:6]]
    v1 = service.add_studies(bench.id, study_uids=half, created_by="admin").version
    again = service.add_studies(bench.id, study_uids=half, created_by="admin")
    assert again.version == v1 and again.added == 0 and again.already == 6  # nothing changed: no new version
    added = service.add_studies(bench.id, query={"ModalitiesInStudy": "CT"}, created_by="admin")
    assert added.added == 6 and added.version.number == 2 and added.version.n_cases == 12
    assert added.version.digest != v1.digest
    v3 = service.import_labels(bench.id, lesion_csv(small_cases), fmt="csv", created_by="admin")
    assert v3.number == 3 and v3.n_labelled == 12
    assert service.import_labels(bench.id, lesion_csv(small_cases), fmt="csv", created_by="admin") == v3
    assert [v.number for v in service.versions(bench.id)] == [1, 2, 3]
    _, cases = service.cases(bench.id, 2)
    assert all(c.label is None for c in cases) and cases[0].sex in ("M", "F", "O")
    assert all(c.manufacturer == "Cloudfilm Synthetic" and c.age_band for c in cases)


def test_unknown_studies_refuse_the_whole_request(bench_archive: Archive, small_cases: list[CtCase]) -> None:
    service = _service(bench_archive)
    bench = service.create(name="b", task="classification", created_by="admin")
    with pytest.raises(InvalidBenchmarkData, match=r"not in the archive: study 1\.2\.3\.4"):
        service.add_studies(bench.id, study_uids=[small_cases[0].study_uid, "1.2.3.4"], created_by="admin")
    assert service.benchmark(bench.id).current is None


def test_bad_label_lines_are_each_named_and_nothing_is_imported(bench_archive: Archive,
                                                                small_cases: list[CtCase]) -> None:  # fmt: skip
    service = _service(bench_archive)
    bench = service.create(name="cls", task="classification", created_by="admin")
    version = service.add_studies(bench.id, study_uids=[c.study_uid for c in small_cases], created_by="admin").version
    uids = [c.study_uid for c in small_cases]
    text = "\n".join(["study_uid,label", f"{uids[0]},positive", f"{uids[1]},positve", "9.9.9,negative",
                      f"{uids[2]},", f"{uids[0]},negative", f"{uids[3]},negative"])  # fmt: skip
    with pytest.raises(InvalidBenchmarkData) as err:
        service.import_labels(bench.id, text, fmt="csv", created_by="admin")
    message = str(err.value)
    assert "line 3: label 'positve' is not one of negative, positive" in message
    assert "line 4: study 9.9.9 is not in this benchmark" in message
    assert "line 5: the label is missing" in message
    assert f"line 6: study {uids[0]} is labelled twice (first on line 2)" in message
    assert "line 7" not in message
    assert service.benchmark(bench.id).current == version  # nothing half-imported
    items = [{"study_uid": uids[0], "label": "positive"}, {"study_uid": uids[1]}, {"label": "negative"}, 7]
    with pytest.raises(InvalidBenchmarkData) as err:
        service.import_labels(bench.id, json.dumps(items), fmt="json", created_by="admin")
    assert "item 2: the label is missing" in str(err.value) and "item 3: study_uid is missing" in str(err.value)
    assert "item 4: not an object" in str(err.value)


def test_detection_and_segmentation_labels_are_validated() -> None:
    schema, known = LabelSchema(), {"1.2.3", "1.2.4"}
    csv_text = "study_uid,x_mm,y_mm,z_mm,radius_mm\n1.2.3,1,2,3,4\n1.2.3,5,6,7,2.5\n1.2.4,,,,\n"
    labels = parse_labels(Task.DETECTION, schema, csv_text, fmt="csv", known=known)
    assert labels["1.2.3"]["lesions"] == [{"center_mm": [1.0, 2.0, 3.0], "radius_mm": 4.0},
                                          {"center_mm": [5.0, 6.0, 7.0], "radius_mm": 2.5}]  # fmt: skip
    assert labels["1.2.4"] == {"lesions": []}
    bad = "study_uid,x_mm,y_mm,z_mm,radius_mm\n1.2.3,1,2,x,4\n1.2.4,1,2,3,-1\n1.2.3,,,,\n"
    with pytest.raises(InvalidBenchmarkData) as err:
        parse_labels(Task.DETECTION, schema, bad, fmt="csv", known=known)
    assert "line 2: lesion 1 z must be a number, not 'x'" in str(err.value)
    assert "line 3: lesion 1: radius_mm must be positive" in str(err.value)
    with pytest.raises(InvalidBenchmarkData, match="the header lacks radius_mm"):
        parse_labels(Task.DETECTION, schema, "study_uid,x_mm,y_mm,z_mm\n", fmt="csv", known=known)
    with pytest.raises(InvalidBenchmarkData, match="uploaded as JSON"):
        parse_labels(Task.SEGMENTATION, schema, "study_uid\n", fmt="csv", known=known)
    mask = np.zeros((3, 4, 4), dtype=bool)
    mask[1, 1:3, 1:3] = True
    seg = [{"study_uid": "1.2.3", "series_uid": "1.2.3.1", "mask": encode_mask(mask), "spacing_mm": [2, 1, 1]},
           {"study_uid": "1.2.4", "series_uid": "1.2.4.1", "mask": {"shape": [1], "data": ""}}]  # fmt: skip
    with pytest.raises(InvalidBenchmarkData, match="item 2: mask: mask encoding must be"):
        parse_labels(Task.SEGMENTATION, schema, json.dumps(seg), fmt="json", known=known)
    good = parse_labels(Task.SEGMENTATION, schema, json.dumps(seg[:1]), fmt="json", known=known)
    assert good["1.2.3"]["voxels"] == 4 and (decode_mask(good["1.2.3"]["mask"]) == mask).all()


def test_splits_are_stratified_and_reproducible() -> None:
    strata = {f"1.2.{i}": ("positive" if i % 3 == 0 else "negative") for i in range(90)}
    a = assign_splits(strata, seed=7, test_fraction=0.3)
    assert a == assign_splits(dict(reversed(list(strata.items()))), seed=7, test_fraction=0.3)  # order-free
    assert a != assign_splits(strata, seed=8, test_fraction=0.3)
    test = [u for u, s in a.items() if s == "test"]
    assert len(test) == 27 and sum(strata[u] == "positive" for u in test) == 9  # 30 % of each stratum
    forced = assign_splits(strata, seed=7, test_fraction=0.3, must_test={"1.2.1"}, must_dev={"1.2.0", "1.2.3"})
    assert forced["1.2.1"] == "test" and forced["1.2.0"] == forced["1.2.3"] == "dev"
    assert sum(s == "test" for s in forced.values()) == 27


def test_split_publishes_the_dev_split_de_identified(bench_archive: Archive, small_cases: list[CtCase]) -> None:
    service = _service(bench_archive)
    bench = service.create(name="lesions", task="detection", created_by="admin")
    service.add_studies(bench.id, study_uids=[c.study_uid for c in small_cases], created_by="admin")
    with pytest.raises(InvalidBenchmarkData, match="every study needs a label"):
        service.split(bench.id, seed=1, test_fraction=0.5, created_by="admin")
    service.import_labels(bench.id, lesion_csv(small_cases), fmt="csv", created_by="admin")
    result = service.split(bench.id, seed=1, test_fraction=0.5, created_by="admin")
    assert result.version.n_dev == result.version.n_test == 6 and result.published == 6
    assert result.version.split_seed == 1
    again = service.split(bench.id, seed=1, test_fraction=0.5, created_by="admin")
    assert again.version == result.version  # same seed, same split: same version
    _, cases = service.cases(bench.id)
    by_uid = {c.study_uid: c for c in small_cases}
    dev = [c for c in cases if c.split == "dev"]
    _, published = service.dev_split(bench.id)
    assert len(published) == 6
    originals = {c.study_uid for c in cases}
    assert not {p.study_uid for p in published} & originals
    assert sorted(json.dumps(p.label, sort_keys=True) for p in published) == sorted(
        json.dumps(c.label, sort_keys=True) for c in dev)
    copy = published[0]
    [instance, *_] = find_instances(bench_archive.engine, AccessScope.everything(), study_uid=copy.study_uid)
    with open_instance(bench_archive.store, instance) as fh:
        ds = pydicom.dcmread(fh)
    assert ds.PatientIdentityRemoved == "YES" and ds.StudyInstanceUID == copy.study_uid
    assert str(ds.PatientName).startswith("ANONYMOUS^") and not any(e.tag.is_private for e in ds)
    assert str(ds.PatientID) not in {c.patient.patient_id for c in by_uid.values()}
    # copies are pinned stable: the router never sends them to a plugin on its own
    with bench_archive.engine.connect() as conn:
        pinned = conn.execute(select(StudyStability.last_instance_at)).scalars().all()
    assert len(pinned) == 6 and stability_of(bench_archive.engine, copy.study_uid).stable
    # another seed cannot move what was hidden or published: the same split, so the same version
    service.add_studies(bench.id, query={"StudyInstanceUID": "*"}, created_by="admin")  # copies are never added
    assert service.benchmark(bench.id).current.n_cases == 12  # type: ignore[union-attr]
    assert service.split(bench.id, seed=99, test_fraction=0.5, created_by="admin").version == result.version
    # ... nor can another benchmark of the same studies
    other = service.create(name="again", task="detection", created_by="admin")
    service.add_studies(other.id, study_uids=[c.study_uid for c in small_cases], created_by="admin")
    service.import_labels(other.id, lesion_csv(small_cases), fmt="csv", created_by="admin")
    service.split(other.id, seed=12345, test_fraction=0.25, created_by="admin")
    _, other_cases = service.cases(other.id)
    assert {c.study_uid: c.split for c in other_cases} == {c.study_uid: c.split for c in cases}
    everything = {m.get("StudyInstanceUID") for m in run_query(bench_archive.engine, QueryRequest(Level.STUDY))}
    assert len(everything) == 18 + 6  # 12 originals and each benchmark's 6 dev copies
