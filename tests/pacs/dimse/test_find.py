"""C-FIND: matching rules case by case, levels and models, returned keys, character sets, C-CANCEL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom.association import Association

from pacs.dimse import find as find_module
from pacs.dimse.contexts import PATIENT_ROOT_FIND, STUDY_ROOT_FIND
from tests.conftest import archive_settings
from tests.factories import PATIENTS, PatientSpec, make_ct_case, write_files
from tests.pacs.dimse.conftest import CORE_BACKENDS
from tests.pacs.dimse.support import AET, QR_AET, Node, context, dicom_settings, run_tool, running

MULLER, DOE, YAMADA = PATIENTS[1], PATIENTS[0], PATIENTS[4]


def seed(node: Node) -> dict[str, str]:
    """Four studies; returns their UIDs by letter."""
    specs: dict[str, tuple[PatientSpec, Literal["CT", "MR"], str, str, int]] = {
        "A": (MULLER, "CT", "20240115", "ACC-A", 2),
        "B": (DOE, "MR", "20230610", "ACC-B", 1),
        "C": (YAMADA, "CT", "20240301", "ACC-C", 1),
        "D": (MULLER, "MR", "20221201", "ACC-D", 1),
    }
    uids = {}
    for n, (letter, (patient, modality, date, accession, series)) in enumerate(specs.items()):
        case = make_ct_case(patient, n_slices=2, rows=8, cols=8, seed=100 + n, modality=modality,
                            study_date=date, accession=accession, series_count=series)
        node.store_datasets(case.datasets)
        uids[letter] = case.study_uid
    return uids


def find(assoc: Association, model: str, query: Dataset) -> tuple[list[Dataset], int]:
    """Every pending identifier and the final status."""
    matches: list[Dataset] = []
    final = -1
    for rsp, identifier in assoc.send_c_find(query, model):
        assert "Status" in rsp, "no response"
        if rsp.Status in (0xFF00, 0xFF01):
            assert identifier is not None
            matches.append(identifier)
        else:
            final = int(rsp.Status)
    return matches, final


def study_query(**keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture(scope="module", params=CORE_BACKENDS)
def qr(request: pytest.FixtureRequest,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Association, dict[str, str]]]:
    """One seeded archive per backend for all matching cases, and one association to it."""
    for base in archive_settings(str(request.param), tmp_path_factory.mktemp("find"), request):
        with running(dicom_settings(base)) as node:
            uids = seed(node)
            assoc = node.associate([context(STUDY_ROOT_FIND), context(PATIENT_ROOT_FIND)])
            assert assoc.is_established
            yield assoc, uids
            assoc.release()


MATCHING_CASES = [
    ("single value", {"AccessionNumber": "ACC-B"}, "B"),
    ("universal", {"PatientName": ""}, "ABCD"),
    ("wildcard *", {"PatientID": "CF-000*"}, "ABCD"),
    ("wildcard ?", {"PatientName": "D?e^John"}, "B"),
    ("PN case and accent insensitive", {"PatientName": "muller*"}, "AD"),
    ("PN exact, other case", {"PatientName": "MÜLLER^JÜRGEN"}, "AD"),
    ("PN ideographic group", {"PatientName": "山田*"}, "C"),
    ("date single", {"StudyDate": "20240115"}, "A"),
    ("date range open end", {"StudyDate": "20240101-"}, "AC"),
    ("date range open start", {"StudyDate": "-20230101"}, "D"),
    ("date range closed", {"StudyDate": "20230101-20231231"}, "B"),
    ("multiple values", {"ModalitiesInStudy": "MR"}, "BD"),
    ("multiple values list", {"ModalitiesInStudy": ["MR", "CT"]}, "ABCD"),
]


@pytest.mark.parametrize(("label", "keys", "expected"), MATCHING_CASES, ids=[c[0] for c in MATCHING_CASES])
def test_study_matching(qr: tuple[Association, dict[str, str]], label: str, keys: dict[str, Any],
                        expected: str) -> None:
    assoc, uids = qr
    query = study_query(**keys)
    if any(not str(v).isascii() for v in keys.values()):
        query.SpecificCharacterSet = "ISO_IR 192"
    matches, final = find(assoc, STUDY_ROOT_FIND, query)
    assert final == 0x0000
    assert sorted(m.StudyInstanceUID for m in matches) == sorted(uids[c] for c in expected), label


def test_uid_list_and_requested_keys(node: Node) -> None:
    uids = seed(node)
    assoc = node.associate([context(STUDY_ROOT_FIND)])
    try:
        query = study_query(PatientName="", StudyDate="", NumberOfStudyRelatedInstances="", StudyComments="",
                            ReferencedStudySequence=[])
        query.StudyInstanceUID = [uids["A"], uids["C"]]
        matches, final = find(assoc, STUDY_ROOT_FIND, query)
    finally:
        assoc.release()
    assert final == 0 and len(matches) == 2
    by_uid = {m.StudyInstanceUID: m for m in matches}
    a = by_uid[uids["A"]]
    for keyword in ("PatientName", "StudyDate", "NumberOfStudyRelatedInstances", "StudyComments",
                    "ReferencedStudySequence", "RetrieveAETitle", "QueryRetrieveLevel"):
        assert keyword in a, keyword  # every requested key is returned, empty when unknown
    assert a.StudyComments in ("", None)
    assert int(a.NumberOfStudyRelatedInstances) == 4
    assert a.RetrieveAETitle == AET
    assert a.SpecificCharacterSet == "ISO_IR 192"
    assert str(a.PatientName) == "Müller^Jürgen"
    assert str(by_uid[uids["C"]].PatientName) == YAMADA.name


def test_levels_and_models(node: Node) -> None:
    uids = seed(node)
    assoc = node.associate([context(STUDY_ROOT_FIND), context(PATIENT_ROOT_FIND)])
    try:
        patient = Dataset()
        patient.QueryRetrieveLevel = "PATIENT"
        patient.PatientName = "muller*"
        patient.PatientID = ""
        patient.NumberOfPatientRelatedStudies = ""
        matches, final = find(assoc, PATIENT_ROOT_FIND, patient)
        assert final == 0 and [m.PatientID for m in matches] == [MULLER.patient_id]
        assert int(matches[0].NumberOfPatientRelatedStudies) == 2

        studies = study_query(PatientID=MULLER.patient_id, StudyDate="")
        matches, final = find(assoc, PATIENT_ROOT_FIND, studies)  # hierarchical: patient's studies
        assert final == 0 and sorted(m.StudyInstanceUID for m in matches) == sorted([uids["A"], uids["D"]])

        series = Dataset()
        series.QueryRetrieveLevel = "SERIES"
        series.StudyInstanceUID = uids["A"]
        series.SeriesInstanceUID = ""
        series.Modality = "CT"
        series.NumberOfSeriesRelatedInstances = ""
        matches, final = find(assoc, STUDY_ROOT_FIND, series)
        assert final == 0 and len(matches) == 2
        assert all(int(m.NumberOfSeriesRelatedInstances) == 2 and m.StudyInstanceUID == uids["A"] for m in matches)

        image = Dataset()
        image.QueryRetrieveLevel = "IMAGE"
        image.StudyInstanceUID = uids["A"]
        image.SeriesInstanceUID = matches[0].SeriesInstanceUID
        image.SOPInstanceUID = ""
        image.SOPClassUID = ""
        image.InstanceNumber = ""
        images, final = find(assoc, STUDY_ROOT_FIND, image)
        assert final == 0 and len(images) == 2
        assert {m.SOPClassUID for m in images} == {"1.2.840.10008.5.1.4.1.1.2"}
        assert sorted(int(m.InstanceNumber) for m in images) == [1, 2]
    finally:
        assoc.release()


def test_identifier_errors(node: Node) -> None:
    seed(node)
    assoc = node.associate([context(STUDY_ROOT_FIND)])
    try:
        patient_in_study_root = Dataset()
        patient_in_study_root.QueryRetrieveLevel = "PATIENT"
        patient_in_study_root.PatientID = ""
        assert find(assoc, STUDY_ROOT_FIND, patient_in_study_root) == ([], 0xA900)
        no_level = Dataset()
        no_level.PatientID = ""
        assert find(assoc, STUDY_ROOT_FIND, no_level) == ([], 0xA900)
        matches, final = find(assoc, STUDY_ROOT_FIND, study_query(StudyDate="2024-13-45"))
        assert matches == [] and 0xC000 <= final <= 0xCFFF
        assert find(assoc, STUDY_ROOT_FIND, study_query(AccessionNumber="ACC-A"))[1] == 0x0000  # still usable
    finally:
        assoc.release()


def test_c_cancel_stops_the_responses(node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = make_ct_case(DOE, n_slices=300, rows=8, cols=8, seed=7)
    results = list(node.archive.ingest.store_files(write_files(case.datasets, tmp_path / "many")))
    assert all(r.ok for r in results)

    def cancel_received() -> bool:
        return any(served.dimse.cancel_req for served in node.listener.ae.active_associations)

    run_query = find_module.run_query

    def paused_after_first_match(*args: Any, **kwargs: Any) -> Iterator[Any]:
        # The server answers 300 tiny matches faster than a C-CANCEL crosses loopback; hold the
        # stream after the first match until the server has the C-CANCEL, so the test is not a race.
        for n, match in enumerate(run_query(*args, **kwargs)):
            yield match
            if n == 0:
                deadline = time.monotonic() + 10
                while not cancel_received() and time.monotonic() < deadline:
                    time.sleep(0.005)

    monkeypatch.setattr(find_module, "run_query", paused_after_first_match)
    assoc = node.associate([context(STUDY_ROOT_FIND)])
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = case.study_uid
        query.SOPInstanceUID = ""
        responses = assoc.send_c_find(query, STUDY_ROOT_FIND, msg_id=7)
        statuses = []
        for rsp, _identifier in responses:
            statuses.append(int(rsp.Status))
            if len(statuses) == 1:  # pynetdicom drops a C-CANCEL that arrives before the request is served
                assoc.send_c_cancel(7, context_id=assoc.accepted_contexts[0].context_id)
    finally:
        assoc.release()
    assert statuses[-1] == 0xFE00
    assert statuses.count(0xFF00) < 300


def test_findscu_dcmtk(node: Node, tmp_path: Path) -> None:
    uids = seed(node)
    out = run_tool("findscu", "-S", "-aet", QR_AET, "-aec", AET, "-X", "-od", tmp_path, "127.0.0.1", node.port,
                   "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=muller*", "-k", "StudyInstanceUID",
                   "-k", "StudyDate", "-k", "ModalitiesInStudy")
    assert out.returncode == 0, out.stderr
    responses = [pydicom.dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    assert sorted(r.StudyInstanceUID for r in responses) == sorted([uids["A"], uids["D"]])
    assert {str(r.PatientName) for r in responses} == {"Müller^Jürgen"}


def test_unknown_ae_may_not_query(node: Node) -> None:
    out = run_tool("findscu", "-S", "-aet", "STRANGER", "-aec", AET, "127.0.0.1", node.port,
                   "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=*")
    assert out.returncode != 0
    assert "no acceptable presentation contexts" in (out.stdout + out.stderr).lower()
