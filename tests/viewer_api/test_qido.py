"""QIDO-RS: query parameters as real clients send them, DICOM JSON per PS3.18 F.2, paging, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pacs.archive import Archive
from tests.factories import PATIENTS, PatientSpec, make_ct_study, make_study_set
from tests.viewer_api.conftest import dicomweb_settings, make_app, store_all

NAME, STUDY_UID, SERIES_UID, SOP_UID, RETRIEVE_URL = "00100010", "0020000D", "0020000E", "00080018", "00081190"


@pytest.fixture(scope="module")
def qido(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """12 studies over 8 patients (non-ASCII names, one with ideographic and phonetic groups), one
    study of 120 small slices, and one patient whose name is markup."""
    tmp = Path(tmp_path_factory.mktemp("qido"))
    with Archive.open(dicomweb_settings(tmp)) as archive:
        cases = make_study_set(n_studies=12, n_slices=2, rows=16, cols=16, seed=3)
        for case in cases:
            store_all(archive, case.datasets)
        big = make_ct_study(PATIENTS[0], n_slices=120, rows=8, cols=8, seed=99, study_date="20200105")
        store_all(archive, big)
        evil = make_ct_study(PatientSpec("<script>alert(1)</script>^Eve", "EVIL-1", "19700101", "F"), n_slices=1,
                             rows=8, cols=8, seed=98)  # fmt: skip
        store_all(archive, evil)
        known = {"big": big[0].StudyInstanceUID, "big_series": big[0].SeriesInstanceUID,
                 "evil": evil[0].StudyInstanceUID}  # fmt: skip
        with TestClient(make_app(archive)) as client:
            yield client, known


def uids(items: list[dict], key: str = STUDY_UID) -> list[str]:
    return [i[key]["Value"][0] for i in items]


def test_percent_encoded_wildcards_are_decoded(qido: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = qido
    raw = client.get("/dicomweb/studies?PatientName=Doe%2A")
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/dicom+json")
    names = {i[NAME]["Value"][0]["Alphabetic"] for i in raw.json()}
    assert names == {"Doe^John"}
    by_tag = client.get("/dicomweb/studies?00100010=Doe%2A&includefield=00081030")
    assert uids(by_tag.json()) == uids(raw.json())
    assert all("00081030" in i for i in by_tag.json())


def test_fuzzy_matching_is_word_prefix_case_and_accent_insensitive(qido: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = qido
    exact = client.get("/dicomweb/studies", params={"PatientName": "muller"}).json()
    assert exact == []
    fuzzy = client.get("/dicomweb/studies", params={"PatientName": "jurg", "fuzzymatching": "true"}).json()
    assert {i[NAME]["Value"][0]["Alphabetic"] for i in fuzzy} == {"Müller^Jürgen"}


def test_person_names_have_their_three_groups(qido: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = qido
    found = client.get("/dicomweb/studies", params={"PatientID": "CF-0005"}).json()
    assert found and found[0][NAME] == {"vr": "PN", "Value": [
        {"Alphabetic": "Yamada^Taro", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}]}  # fmt: skip


def test_dates_modalities_and_counts(qido: tuple[TestClient, dict[str, str]]) -> None:
    client, known = qido
    in_2020 = client.get("/dicomweb/studies?StudyDate=20200101-20201231").json()
    assert uids(in_2020) == [known["big"]]
    study = in_2020[0]
    assert study["00201208"] == {"vr": "IS", "Value": [120]}  # NumberOfStudyRelatedInstances, a JSON number
    assert study["00201206"] == {"vr": "IS", "Value": [1]}
    assert study["00080061"]["Value"] == ["CT"]
    assert study[RETRIEVE_URL]["Value"] == [f"http://testserver/dicomweb/studies/{known['big']}"]
    mr = client.get("/dicomweb/studies?ModalitiesInStudy=MR").json()
    assert mr and all(s["00080061"]["Value"] == ["MR"] for s in mr)
    assert len(client.get("/dicomweb/studies?ModalitiesInStudy=CT%5CMR").json()) == 14  # "CT\\MR", percent-encoded


def test_requested_keys_are_present_even_when_empty(qido: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = qido
    found = client.get("/dicomweb/studies?PatientID=CF-0001&includefield=IssuerOfPatientID,PatientAge").json()
    assert found
    for study in found:
        assert study["00100021"] == {"vr": "LO"}
        assert "00101010" in study and study["00101010"]["vr"] == "AS"
        assert "00080050" in study  # AccessionNumber, a default key


def test_includefield_all(qido: tuple[TestClient, dict[str, str]]) -> None:
    client, known = qido
    one = client.get(f"/dicomweb/studies/{known['big']}/instances?includefield=all&limit=1").json()[0]
    assert "00280010" in one and "00200032" in one  # Rows, and ImagePositionPatient from the stored JSON


def test_every_level_and_path(qido: tuple[TestClient, dict[str, str]]) -> None:
    client, known = qido
    series = client.get(f"/dicomweb/studies/{known['big']}/series").json()
    assert uids(series, SERIES_UID) == [known["big_series"]]
    assert series[0]["00201209"] == {"vr": "IS", "Value": [120]}
    assert series[0][RETRIEVE_URL]["Value"][0].endswith(f"/studies/{known['big']}/series/{known['big_series']}")
    assert series[0]["00200011"]["vr"] == "IS" and isinstance(series[0]["00200011"]["Value"][0], int)
    instances = client.get(f"/dicomweb/studies/{known['big']}/series/{known['big_series']}/instances").json()
    assert len(instances) == 100  # the default limit
    assert instances[0][RETRIEVE_URL]["Value"][0].endswith(f"/instances/{instances[0][SOP_UID]['Value'][0]}")
    assert len(client.get(f"/dicomweb/studies/{known['big']}/instances?limit=1000").json()) == 120
    assert len(client.get("/dicomweb/series?Modality=CT&limit=1000").json()) >= 10
    sop = instances[5][SOP_UID]["Value"][0]
    assert uids(client.get(f"/dicomweb/instances?SOPInstanceUID={sop}").json(), SOP_UID) == [sop]
    two = [instances[1][SOP_UID]["Value"][0], sop]
    listed = client.get(f"/dicomweb/instances?SOPInstanceUID={','.join(two)}").json()
    assert sorted(uids(listed, SOP_UID)) == sorted(two)


def test_limit_and_offset_page_through(qido: tuple[TestClient, dict[str, str]]) -> None:
    client, known = qido
    path = f"/dicomweb/studies/{known['big']}/instances"
    pages = [uids(client.get(f"{path}?limit=50&offset={o}").json(), SOP_UID) for o in (0, 50, 100)]
    assert [len(p) for p in pages] == [50, 50, 20]
    assert len({u for p in pages for u in p}) == 120
    assert client.get(f"{path}?offset=500").json() == []


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=ten", "offset=-1", "fuzzymatching=maybe",
                                   "NoSuchKeyword=1", "99999999=1", "includefield=Bogus",
                                   "00081150.00081155=1.2", "StudyDate=2020-01-01", "PatientID=1&PatientID=2"])
def test_bad_parameters_are_400(qido: tuple[TestClient, dict[str, str]], query: str) -> None:
    client, _ = qido
    resp = client.get(f"/dicomweb/studies?{query}")
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"].startswith("text/plain") and "Traceback" not in resp.text


@pytest.mark.parametrize(("query", "named"), [
    ("StudyDate=20261340", "StudyDate value '20261340' is not a valid date (YYYYMMDD)"),
    ("StudyDate=20200101-20201399", "StudyDate value '20201399' is not a valid date"),
    ("StudyTime=2500", "StudyTime value '2500' is not a valid time"),
    ("PatientName=abc%00def", "PatientName value 'abc\\x00def' holds a NUL character"),
])
def test_impossible_values_are_400_naming_them(qido: tuple[TestClient, dict[str, str]], query: str,
                                               named: str) -> None:
    client, _ = qido
    resp = client.get(f"/dicomweb/studies?{query}")
    assert resp.status_code == 400 and named in resp.text, resp.text


@pytest.mark.parametrize("query", ["StudyDate=20200101-", "StudyDate=-20200105", "StudyDate=20200105",
                                   "StudyDate=2020.01.01-2020.12.31", "StudyTime=-2359", "StudyTime=000000-235960",
                                   "StudyDate=20200105%5C19991231", "StudyDate=20200105&StudyTime=0000-235959.999"])
def test_real_dates_ranges_and_open_ranges_keep_working(qido: tuple[TestClient, dict[str, str]], query: str) -> None:
    client, known = qido
    resp = client.get(f"/dicomweb/studies?{query}&limit=1000")
    assert resp.status_code == 200, resp.text
    assert known["big"] in uids(resp.json())  # studied on 2020-01-05


def test_no_match_is_200_and_an_empty_array(qido: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = qido
    resp = client.get("/dicomweb/studies?PatientID=NOBODY")
    assert resp.status_code == 200 and resp.json() == []


def test_xml_only_is_406(qido: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = qido
    assert client.get("/dicomweb/studies", headers={"Accept": "application/dicom+xml"}).status_code == 406
    assert client.get("/dicomweb/studies", headers={"Accept": "application/json"}).headers["content-type"] \
        .startswith("application/json")


def test_markup_in_names_comes_back_escaped(qido: tuple[TestClient, dict[str, str]]) -> None:
    client, known = qido
    resp = client.get("/dicomweb/studies?PatientID=EVIL-1")
    assert "<script>" not in resp.text and "\\u003cscript\\u003e" in resp.text
    assert resp.json()[0][NAME]["Value"][0]["Alphabetic"] == "<script>alert(1)</script>^Eve"
    assert resp.headers["x-content-type-options"] == "nosniff"
    meta = client.get(f"/dicomweb/studies/{known['evil']}/metadata")
    assert "<script>" not in meta.text and meta.json()[0][NAME]["Value"][0]["Alphabetic"].startswith("<script>")


def test_large_answers_are_gzipped(qido: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = qido
    resp = client.get("/dicomweb/instances?limit=200", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip" and len(resp.json()) == 145
    plain = client.get("/dicomweb/instances?limit=200", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == resp.json()
