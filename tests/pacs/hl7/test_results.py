"""ORU^R01 results: parsed into an ExternalReport, matched to a study of the real index (SQLite and
PostgreSQL), answered over a real MLLP socket: AA once the sink stored it, AE with the reason for an
unknown study or a sink that refuses, AR for a malformed message or an unsupported type."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import StorageUnavailable
from pacs.hl7 import ExternalReport, Hl7Listener, MatchedStudy
from pacs.hl7.messages import AckCode, Refusal, parse_message
from pacs.hl7.report_sink import report_sink
from pacs.hl7.results import match_study, parse_oru
from pacs.query import Level, QueryRequest, run_query
from pacs.reports.service import latest_signed
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.pacs.hl7.support import connected, msh, oru, segment


class RecordingSink:
    """A ReportSink that keeps what it was given (or fails as told)."""

    def __init__(self) -> None:
        self.received: list[tuple[ExternalReport, MatchedStudy]] = []
        self.fail: Exception | None = None

    def __call__(self, report: ExternalReport, study: MatchedStudy) -> str:
        if self.fail is not None:
            raise self.fail
        self.received.append((report, study))
        return f"2.25.{len(self.received)}"


def _seed(archive: Archive, accession: str, seed: int, patient: int = 0) -> str:
    study = make_ct_study(PATIENTS[patient], n_slices=1, rows=16, cols=16, seed=seed)
    for ds in study:
        ds.AccessionNumber = accession
        assert archive.ingest.store_bytes(to_bytes(ds)).ok
    return str(study[0].StudyInstanceUID)


@contextlib.contextmanager
def listening(archive: Archive, sink: RecordingSink | None) -> Iterator[int]:
    archive.settings = archive.settings.model_copy(update={"hl7_port": 0, "hl7_host": "127.0.0.1"})
    listener = Hl7Listener(archive, report_sink=sink)
    listener.start()
    try:
        yield listener.port
    finally:
        listener.stop()


def test_parse_oru_reads_text_author_and_time() -> None:
    report = parse_oru(parse_message(oru("C1", accession="A1", lines=("Heart \\T\\ lungs: normal.", "Line two"))))
    assert report.accession_number == "A1" and report.control_id == "C1" and report.patient_id == "P100"
    assert report.text == ("Heart & lungs: normal.", "Line two")
    assert report.author is not None and report.author.dicom_name == "House^Gregory" and report.author.id == "1234"
    assert report.observed_at == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    assert report.procedure == "CHEST XRAY" and report.result_status == "F"
    fallback = parse_oru(parse_message(oru("C2", accession="A1", author="", observer="55^Wilson^James",
                                           observed="202603011130+0100")))
    assert fallback.author is not None and fallback.author.dicom_name == "Wilson^James"
    assert fallback.observed_at == datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    by_uid = parse_oru(parse_message(oru("C3", study_uid="1.2.826.0.1.3680043.8.498.1")))
    assert by_uid.study_uid == "1.2.826.0.1.3680043.8.498.1" and by_uid.accession_number == ""
    assert by_uid.text == ("Findings: no acute disease.", "Impression: normal chest.")


@pytest.mark.parametrize(("message", "reason"), [
    (oru("C1"), "names no study"),
    (oru("C1", accession="A1", lines=()), "no report text"),
    (oru("C1", accession="A1", observed="2026-03-01"), "not a date-time"),
    (oru("C1", study_uid="not-a-uid"), "not a valid UID"),
    (("\r".join([msh("ORU^R01", "C1"), segment("PID", {3: "P1"})]) + "\r").encode(), "no OBR"),
])
def test_malformed_results_are_rejected(message: bytes, reason: str) -> None:
    with pytest.raises(Refusal, match=reason) as caught:
        parse_oru(parse_message(message))
    assert caught.value.ack is AckCode.REJECT


def test_matching_against_the_index(archive: Archive) -> None:
    uid = _seed(archive, "ACC-1", seed=1)
    _seed(archive, "TWICE", seed=2)
    _seed(archive, "TWICE", seed=3, patient=1)
    found = match_study(archive.engine, parse_oru(parse_message(oru("C1", accession="ACC-1",
                                                                    patient_id=PATIENTS[0].patient_id))))
    assert found.study_uid == uid and found.accession_number == "ACC-1"
    by_uid = parse_oru(parse_message(oru("C2", study_uid=uid, patient_id="")))
    assert match_study(archive.engine, by_uid).study_uid == uid
    for message, reason in [(oru("C3", accession="NOPE"), "no study with accession number NOPE"),
                            (oru("C4", accession="TWICE"), "2 studies have accession number TWICE"),
                            (oru("C5", accession="ACC-1", patient_id="SOMEONE-ELSE"), "another patient ID")]:
        with pytest.raises(Refusal, match=reason) as caught:
            match_study(archive.engine, parse_oru(parse_message(message)))
        assert caught.value.ack is AckCode.ERROR


def test_oru_over_mllp_is_acknowledged_as_stored(archive: Archive) -> None:
    uid = _seed(archive, "ACC-7", seed=7)
    sink = RecordingSink()
    with listening(archive, sink) as port, connected(port) as client:
        ack = client.send(oru("MSG-1", accession="ACC-7", patient_id=PATIENTS[0].patient_id))
        assert (ack.code, ack.field("MSA", 2), ack.field("MSH", 9)) == ("AA", "MSG-1", "ACK^R01^ACK")
        assert ack.field("MSH", 3) == "CLOUDFILM" and ack.field("MSH", 5) == "RIS"
        ((report, study),) = sink.received
        assert study.study_uid == uid and report.author is not None and report.author.family_name == "House"

        unknown = client.send(oru("MSG-2", accession="NOT-HERE"))
        assert unknown.code == "AE" and "no study with accession number NOT-HERE" in unknown.reason
        assert unknown.field("ERR", 3).startswith("204^") and "NOT-HERE" in unknown.field("ERR", 8)

        malformed = client.send(oru("MSG-3"))
        assert malformed.code == "AR" and "names no study" in malformed.reason
        assert malformed.field("ERR", 3).startswith("101^")

        adt = client.send(("\r".join([msh("SIU^S12", "MSG-4"), segment("PID", {3: "P1"})]) + "\r").encode())
        assert adt.code == "AR" and "message type 'SIU' is not supported" in adt.reason
        assert adt.field("ERR", 3).startswith("200^")

        garbage = client.send(b"this is not HL7")
        assert garbage.code == "AR" and "does not start with an MSH segment" in garbage.reason

        sink.fail = StorageUnavailable("the object store cannot be reached")
        down = client.send(oru("MSG-5", accession="ACC-7", patient_id=PATIENTS[0].patient_id))
        assert down.code == "AE" and "send it again later" in down.reason
        assert len(sink.received) == 1


def test_oru_results_become_the_studys_signed_report(archive: Archive) -> None:
    """The sink ``serve`` wires: a final result is stored as a signed SR + PDF naming its author, a
    corrected one amends it, a preliminary one or one without an author is refused."""
    uid = _seed(archive, "ACC-9", seed=9)
    pid = PATIENTS[0].patient_id
    with listening(archive, report_sink(archive)) as port, connected(port) as client:
        ack = client.send(oru("MSG-10", accession="ACC-9", patient_id=pid))
        assert ack.code == "AA", ack.reason
        first = latest_signed(archive.engine, AccessScope.everything(), uid)
        assert first is not None and first.version == 1 and first.signer_name == "Gregory House"
        assert "Findings: no acute disease." in first.sections.findings

        preliminary = client.send(oru("MSG-11", accession="ACC-9", patient_id=pid, status="P"))
        assert preliminary.code == "AR" and "not a signed report" in preliminary.reason
        anonymous = client.send(oru("MSG-12", accession="ACC-9", patient_id=pid, author=""))
        assert anonymous.code == "AR" and "names no author" in anonymous.reason

        corrected = client.send(oru("MSG-13", accession="ACC-9", patient_id=pid, status="C",
                                    lines=("Impression: small effusion on the left.",)))
        assert corrected.code == "AA", corrected.reason
    latest = latest_signed(archive.engine, AccessScope.everything(), uid)
    assert latest is not None and latest.version == 2 and latest.supersedes_id == first.id
    assert "small effusion" in latest.sections.findings
    request = QueryRequest(level=Level.IMAGE, filters={"StudyInstanceUID": uid}, return_keys=("SOPInstanceUID",),
                           scope=AccessScope.everything())
    stored = {m.get("SOPInstanceUID") for m in run_query(archive.engine, request)}
    assert {first.sr_uid, first.pdf_uid, latest.sr_uid, latest.pdf_uid} <= stored


def test_without_a_sink_results_are_refused_with_a_reason(archive: Archive) -> None:
    _seed(archive, "ACC-8", seed=8)
    with listening(archive, None) as port, connected(port) as client:
        ack = client.send(oru("MSG-9", accession="ACC-8", patient_id=PATIENTS[0].patient_id))
    assert ack.code == "AE" and "does not store reports received over HL7 yet" in ack.reason
