"""Partitions in the core (issue 17 item 5): the same UIDs indexed in two partitions at once (one group
commit may hold both), patients, studies and the query engine kept apart, settings checked, and the
directory recorded once with stable ids. SQLite + filesystem and PostgreSQL + S3."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import SettingsError
from pacs.ingest import Outcome
from pacs.partitions import PartitionConfig
from pacs.query import Level, QueryRequest, run_query
from pacs.settings import Settings, load_settings
from tests.factories import PATIENTS, make_ct_study, to_bytes


@pytest.fixture
def two(settings: Settings) -> Iterator[Archive]:
    with Archive.open(settings.model_copy(update={"partitions": {"north": PartitionConfig(ae_titles=["NORTH"])}})) \
            as archive:
        yield archive


def test_the_same_instances_land_in_two_partitions_from_one_group_commit(two: Archive) -> None:
    north = two.partitions.by_slug("north")
    assert north is not None and north.id != 1
    study = make_ct_study(PATIENTS[0], n_slices=8, rows=16, cols=16, seed=77)
    theirs = [copy.deepcopy(ds) for ds in study]
    for ds in theirs:
        ds.PatientName = "North^Patient"
    jobs = [(to_bytes(ds), None) for ds in study] + [(to_bytes(ds), north) for ds in theirs]
    with ThreadPoolExecutor(16) as pool:  # concurrent sends share group commits across partitions
        results = list(pool.map(lambda job: two.ingest.store_bytes(job[0], partition=job[1] or two.partitions.default),
                                jobs))
    assert [r.outcome for r in results] == [Outcome.STORED] * 16
    # sent again: a duplicate in each partition, not a conflict between them
    assert two.ingest.store_bytes(jobs[0][0]).outcome is Outcome.DUPLICATE
    assert two.ingest.store_bytes(jobs[8][0], partition=north).outcome is Outcome.DUPLICATE

    def names(level: Level, partition: int) -> list[str]:
        request = QueryRequest(level, {"PatientName": ""}, scope=AccessScope.everything(partition))
        return [str(m.get("PatientName")) for m in run_query(two.engine, request)]

    assert names(Level.PATIENT, 1) == [PATIENTS[0].name]
    assert names(Level.PATIENT, north.id) == ["North^Patient"]
    assert names(Level.STUDY, 1) == [PATIENTS[0].name]
    assert names(Level.STUDY, north.id) == ["North^Patient"]
    assert len(names(Level.IMAGE, north.id)) == 8
    counts = list(run_query(two.engine, QueryRequest(Level.STUDY, {"NumberOfStudyRelatedInstances": ""},
                                                     scope=AccessScope.everything(north.id))))
    assert [m.get("NumberOfStudyRelatedInstances") for m in counts] == [8]


def test_partition_ids_stay_as_first_given(tmp_path: Path) -> None:
    base = Settings(data_dir=tmp_path / "data")
    with Archive.open(base.model_copy(update={"partitions": {"b": PartitionConfig(ae_titles=["B"])}})) as archive:
        b = archive.partitions.by_slug("b")
    config = {"a": PartitionConfig(ae_titles=["A"]), "b": PartitionConfig(ae_titles=["B2"])}
    with Archive.open(base.model_copy(update={"partitions": config})) as archive:
        assert archive.partitions.by_slug("b") == type(b)(b.id, "b", ("B2",))  # type: ignore[misc, union-attr]
        assert archive.partitions.for_called_ae("A").slug == "a"  # type: ignore[union-attr]
        assert archive.partitions.for_called_ae("B") is None
    with Archive.open(base) as archive:  # a partition dropped from the config is no longer reachable
        assert [p.slug for p in archive.partitions.all()] == ["default"]


@pytest.mark.parametrize(("toml", "message"), [
    ('[partitions.North]\nae_titles = ["N"]\n', "lower-case"),
    ('[partitions.default]\nae_titles = ["N"]\n', "lower-case"),
    ('[partitions.north]\nae_titles = []\n', "at least one AE title"),
    ('[partitions.north]\nae_titles = ["CLOUDFILM"]\n', "already 'default'"),
    ('[partitions.a]\nae_titles = ["X"]\n[partitions.b]\nae_titles = ["X"]\n', "already 'a'"),
    ('[partitions.north]\nae_titles = ["WAY-TOO-LONG-AE-TITLE"]\n', "1 to 16"),
])
def test_partition_settings_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str,
                                        message: str) -> None:
    path = tmp_path / "cloudfilm.toml"
    path.write_text(toml)
    monkeypatch.setenv("CLOUDFILM_CONFIG", str(path))
    with pytest.raises(SettingsError, match=message):
        load_settings(data_dir=tmp_path / "data")


def test_partitions_come_from_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cloudfilm.toml"
    path.write_text('[partitions.north]\nname = "North Hospital"\nae_titles = ["NORTH", "NORTH_CT"]\n')
    monkeypatch.setenv("CLOUDFILM_CONFIG", str(path))
    settings = load_settings(data_dir=tmp_path / "data")
    assert settings.partitions == {"north": PartitionConfig(name="North Hospital", ae_titles=["NORTH", "NORTH_CT"])}
