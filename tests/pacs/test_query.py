"""The shared query engine: PS3.4 C.2.2.2 matching, levels, paging and access scope."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import InvalidQuery
from pacs.index.models import Study
from pacs.query import Level, QueryRequest, run_query
from pacs.query.matching import value_condition
from tests.factories import PATIENTS, make_ct_case, to_bytes

# Patients: 0 Doe^John, 1 Müller^Jürgen, 2 Łukasiewicz^Zoë, 4 Yamada^Taro=山田^太郎=...
STUDIES = [
    dict(patient=PATIENTS[0], study_date="20230105", study_time="081500", accession="ACC1", modality="CT"),
    dict(patient=PATIENTS[0], study_date="20240220", study_time="133000", accession="ACC2", modality="MR"),
    dict(patient=PATIENTS[1], study_date="20240301", study_time="101010", accession="ACC3", modality="CT"),
    dict(patient=PATIENTS[2], study_date="20241231", study_time="235959", accession="ACC4", modality="CT"),
    dict(patient=PATIENTS[4], study_date="20220610", study_time="070000", accession="ACC5", modality="MR"),
]


@pytest.fixture(scope="module")
def loaded(module_archive: Archive) -> Iterator[tuple[Archive, list[str]]]:
    archive = module_archive
    uids = []
    for i, spec in enumerate(STUDIES):
        case = make_ct_case(n_slices=2, rows=16, cols=16, seed=100 + i, **spec)  # type: ignore[arg-type]
        for ds in case.datasets:
            assert archive.ingest.store_bytes(to_bytes(ds)).ok
        uids.append(case.study_uid)
    yield archive, uids


def _studies(archive: Archive, **filters: str) -> list[str]:
    request = QueryRequest(Level.STUDY, filters)
    return [m.get("AccessionNumber") for m in run_query(archive.engine, request)]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["ACC4", "ACC3", "ACC2", "ACC1", "ACC5"]),  # newest first
        ({"PatientName": "Doe^John"}, ["ACC2", "ACC1"]),
        ({"PatientName": "doe^john"}, ["ACC2", "ACC1"]),  # case-insensitive
        ({"PatientName": "Do*"}, ["ACC2", "ACC1"]),
        ({"PatientName": "D?e*"}, ["ACC2", "ACC1"]),
        ({"PatientName": "muller*"}, ["ACC3"]),  # accent-insensitive
        ({"PatientName": "MÜLLER^JÜRGEN"}, ["ACC3"]),
        ({"PatientName": "lukasiewicz*"}, ["ACC4"]),
        ({"PatientName": "山田*"}, ["ACC5"]),  # ideographic group
        ({"PatientName": "*"}, ["ACC4", "ACC3", "ACC2", "ACC1", "ACC5"]),
        ({"StudyDate": "20240220"}, ["ACC2"]),
        ({"StudyDate": "20240101-"}, ["ACC4", "ACC3", "ACC2"]),
        ({"StudyDate": "-20230105"}, ["ACC1", "ACC5"]),
        ({"StudyDate": "20230101-20240225"}, ["ACC2", "ACC1"]),
        ({"StudyDate": "2024.01.01-"}, ["ACC4", "ACC3", "ACC2"]),  # ACR-NEMA date form
        ({"StudyTime": "1000-1400"}, ["ACC3", "ACC2"]),
        ({"AccessionNumber": "ACC3"}, ["ACC3"]),
        ({"AccessionNumber": "acc3"}, []),  # SH matching is case-sensitive
        ({"AccessionNumber": "ACC*"}, ["ACC4", "ACC3", "ACC2", "ACC1", "ACC5"]),
        ({"AccessionNumber": "ACC1\\ACC5"}, ["ACC1", "ACC5"]),  # multiple values
        ({"ModalitiesInStudy": "MR"}, ["ACC2", "ACC5"]),
        ({"ModalitiesInStudy": "MR\\CT"}, ["ACC4", "ACC3", "ACC2", "ACC1", "ACC5"]),
        ({"PatientID": PATIENTS[1].patient_id}, ["ACC3"]),
        ({"00100020": PATIENTS[1].patient_id}, ["ACC3"]),  # by tag
        ({"Modality": "MR"}, ["ACC2", "ACC5"]),  # series attribute at study level
        ({"StudyDate": "20240229-20240301"}, ["ACC3"]),  # a leap day
        ({"StudyTime": "235960"}, []),  # a leap second is a valid time
        ({"StudyDate": "-20221231\\20241231"}, ["ACC4", "ACC5"]),  # an open range and a date, either
        ({"AccessionNumber": "ACC3\x00"}, ["ACC3"]),  # trailing NUL: DICOM padding
    ],
)
def test_study_matching(loaded: tuple[Archive, list[str]], filters: dict[str, str], expected: list[str]) -> None:
    archive, _ = loaded
    assert _studies(archive, **filters) == expected


def test_uid_list_matching(loaded: tuple[Archive, list[str]]) -> None:
    archive, uids = loaded
    got = _studies(archive, StudyInstanceUID=f"{uids[0]}\\{uids[3]}")
    assert sorted(got) == ["ACC1", "ACC4"]


def test_fuzzy_matching_is_word_prefix(loaded: tuple[Archive, list[str]]) -> None:
    archive, _ = loaded
    request = QueryRequest(Level.STUDY, {"PatientName": "jurg"}, fuzzy=True)
    assert [m.get("AccessionNumber") for m in run_query(archive.engine, request)] == ["ACC3"]
    request = QueryRequest(Level.STUDY, {"PatientName": "taro yam"}, fuzzy=True)
    assert [m.get("AccessionNumber") for m in run_query(archive.engine, request)] == ["ACC5"]


def test_levels_and_counts(loaded: tuple[Archive, list[str]]) -> None:
    archive, uids = loaded
    patients = list(run_query(archive.engine, QueryRequest(Level.PATIENT, {"PatientName": "Doe*"})))
    assert len(patients) == 1 and patients[0].get("NumberOfPatientRelatedStudies") == 2
    series = list(run_query(archive.engine, QueryRequest(Level.SERIES, {"StudyInstanceUID": uids[0]})))
    assert len(series) == 1 and series[0].get("NumberOfSeriesRelatedInstances") == 2
    images = list(run_query(archive.engine, QueryRequest(Level.IMAGE, {"StudyInstanceUID": uids[0]},
                                                         return_keys=["SliceThickness", "Manufacturer"])))
    assert [m.get("InstanceNumber") for m in images] == [1, 2]
    ds = images[0].to_dataset()
    assert ds.Manufacturer and ds.SliceThickness  # from the stored metadata, not a column
    assert "SOPInstanceUID" in ds and "SeriesInstanceUID" in ds


def test_every_requested_key_is_returned(loaded: tuple[Archive, list[str]]) -> None:
    archive, _ = loaded
    request = QueryRequest(Level.STUDY, {"PatientName": "Müller*", "StudyComments": "", "OtherPatientIDs": ""})
    [match] = run_query(archive.engine, request)
    ds = match.to_dataset()
    assert "StudyComments" in ds and ds.StudyComments in ("", None)
    assert ds.SpecificCharacterSet == "ISO_IR 192"  # non-ASCII name
    body = match.to_json()
    assert body["00100010"]["Value"][0]["Alphabetic"] == "Müller^Jürgen"
    assert body["00201208"]["Value"] == [2]  # IS as a JSON number
    assert body["00080061"]["Value"] == ["CT"]


def test_paging_and_limits(loaded: tuple[Archive, list[str]]) -> None:
    archive, _ = loaded
    page = [m.get("AccessionNumber") for m in run_query(archive.engine, QueryRequest(Level.STUDY, limit=2, offset=1))]
    assert page == ["ACC3", "ACC2"]
    with pytest.raises(InvalidQuery):
        list(run_query(archive.engine, QueryRequest(Level.STUDY, limit=-1)))


@pytest.mark.parametrize(
    "filters",
    [{"StudyDate": "2024-13-01"}, {"StudyDate": "yesterday"}, {"StudyInstanceUID": "1.2.3/../4"},
     {"NoSuchKeyword": "x"}, {"InstanceNumber": "one"}, {"StudyDate": "-"}],
)
def test_malformed_queries_are_refused(loaded: tuple[Archive, list[str]], filters: dict[str, str]) -> None:
    archive, _ = loaded
    with pytest.raises(InvalidQuery):
        list(run_query(archive.engine, QueryRequest(Level.STUDY, filters)))


@pytest.mark.parametrize(
    ("filters", "named"),
    [({"StudyDate": "20261340"}, "'20261340' is not a valid date"),
     ({"StudyDate": "20230229"}, "'20230229' is not a valid date"),  # not a leap year
     ({"StudyDate": "20240101-20241332"}, "'20241332' is not a valid date"),  # each bound of a range
     ({"StudyDate": "-00000101"}, "'00000101'"),
     ({"StudyTime": "250000"}, "'250000' is not a valid time"),
     ({"StudyTime": "1260-"}, "'1260' is not a valid time"),
     ({"SeriesDate": "20240431"}, "SeriesDate value '20240431'"),
     ({"PatientName": "abc\x00def"}, "PatientName value 'abc\\x00def' holds a NUL character"),
     ({"PatientID": "CF\x00-0001"}, "holds a NUL character"),
     ({"StudyDescription": "CT \udc80"}, "is not valid Unicode text")],
)
def test_impossible_dates_times_and_unstorable_text_are_named(loaded: tuple[Archive, list[str]],
                                                              filters: dict[str, str], named: str) -> None:
    archive, _ = loaded
    with pytest.raises(InvalidQuery, match=re.escape(named)):
        list(run_query(archive.engine, QueryRequest(Level.STUDY, filters)))


@pytest.mark.parametrize(
    ("value", "valid"),
    [("2024", True), ("202402", True), ("20240229", True), ("20240229235960.123456", True),
     ("20240101120000+1400", True), ("20240101120000+0000", True), ("20240101+0530", True),
     ("20241301", False), ("20230229", False), ("20240101246000", False), ("20240101120000+1401", False),
     ("20240101120000+1500", False), ("20240101120000+0560", False), ("2024010112-20241231", True),
     ("2024-20231399", False)],
)
def test_date_time_values_are_checked(value: str, valid: bool) -> None:
    """DT (PS3.5 Table 6.2-1), through the one matcher C-FIND and QIDO-RS share."""
    column = Study.study_date  # any text column: only the value is checked here
    if valid:
        value_condition(column, None, "DT", value, "AcquisitionDateTime", "postgresql")
    else:
        with pytest.raises(InvalidQuery, match="AcquisitionDateTime value"):
            value_condition(column, None, "DT", value, "AcquisitionDateTime", "postgresql")


def test_access_scope_limits_every_level(loaded: tuple[Archive, list[str]]) -> None:
    archive, uids = loaded
    only = AccessScope.studies(uids[2])
    assert [m.get("AccessionNumber") for m in run_query(archive.engine, QueryRequest(Level.STUDY, scope=only))] == [
        "ACC3"
    ]
    assert len(list(run_query(archive.engine, QueryRequest(Level.IMAGE, scope=only)))) == 2
    [patient] = run_query(archive.engine, QueryRequest(Level.PATIENT, scope=only))
    assert patient.get("PatientName") == "Müller^Jürgen"
    doe = AccessScope(patient_keys=frozenset({(PATIENTS[0].patient_id, PATIENTS[0].issuer or "")}))
    assert sorted(m.get("AccessionNumber") for m in run_query(archive.engine, QueryRequest(Level.STUDY, scope=doe))) \
        == ["ACC1", "ACC2"]
    hidden = AccessScope(all_studies=True, hidden_study_uids=frozenset({uids[0]}))
    assert "ACC1" not in _accessions(archive, hidden)
    assert list(run_query(archive.engine, QueryRequest(Level.STUDY, scope=AccessScope.nothing()))) == []


def _accessions(archive: Archive, scope: AccessScope) -> list[str]:
    return [m.get("AccessionNumber") for m in run_query(archive.engine, QueryRequest(Level.STUDY, scope=scope))]
