"""Reports (issue 13): drafts are durable, signing stores a verified SR, an Encapsulated PDF and a
KOS through the one ingest path with the ``report.signed`` event in the same commit, amendments
supersede, a RIS's report is stored as signed by its author; on SQLite and on PostgreSQL. The
documents pass ``dciodvfy`` and a C-FIND of the study lists them."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pydicom
import pypdf
import pytest
from pydicom.dataset import Dataset
from pynetdicom import build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from sqlalchemy import select

from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.accounts.audit import AuditQuery
from pacs.accounts.audit import query as audit_query
from pacs.accounts.principal import Principal
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.errors import Conflict, InvalidQuery, NotFound
from pacs.events import EVENT_REPORT_SIGNED, read_feed
from pacs.index.models import OutboxEvent
from pacs.reports import service
from pacs.reports.types import CitedFinding, DraftRequest, KeyImage, ReportSections
from pacs.retrieve import find_instances, open_instance
from pacs.settings import Settings
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.pacs.dimse.support import dicom_settings, running
from tests.pg import postgres_available, temporary_database

HOSPITAL = "St. Example Hospital"
DCIODVFY = "/usr/bin/dciodvfy"
TEXT = ReportSections(clinical_information="Cough for three weeks.", technique="CT of the chest without contrast.",
                      findings="A 12 mm nodule in the right upper lobe.\nNo effusion.",
                      impression="Solitary pulmonary nodule; follow-up CT in 3 months.")  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    values: dict[str, object] = {"data_dir": tmp_path / "data", "http_port": 0, "dicom_port": 0,
                                 "institution_name": HOSPITAL}
    if request.param == "sqlite":
        with Archive.open(Settings(**values)) as opened:  # type: ignore[arg-type]
            yield opened
        return
    if not postgres_available():
        pytest.skip("PostgreSQL not running")
    template: str = request.getfixturevalue("pg_template")
    with temporary_database(template=template) as url, \
            Archive.open(Settings(**values, database_url=url)) as opened:  # type: ignore[arg-type]
        yield opened


def _study(archive: Archive, patient: int = 1, seed: int = 7) -> list[Dataset]:
    datasets = make_ct_study(PATIENTS[patient], n_slices=3, rows=16, cols=16, seed=seed)
    for ds in datasets:
        assert archive.ingest.store_bytes(to_bytes(ds)).ok
    return datasets


def _physician(archive: Archive) -> Principal:
    user = create_user(archive.engine, "drjane", "correct horse battery", "physician", full_name="Jane Doe")
    return Principal(user_id=user.id, username="drjane", role="physician", via="bearer")


def _read(archive: Archive, study_uid: str, sop_uid: str) -> Dataset:
    [stored] = find_instances(archive.engine, AccessScope.everything(), study_uid=study_uid, sop_uid=sop_uid)
    with open_instance(archive.store, stored) as fh:
        return pydicom.dcmread(io.BytesIO(fh.read()))


def _valid(ds: Dataset, tmp_path: Path) -> None:
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False)
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], out.stdout + out.stderr


def _pdf_text(ds: Dataset) -> str:
    from pacs.reports.pdf import pdf_bytes

    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf_bytes(ds))).pages)


def test_a_draft_is_kept_audited_and_shown_to_staff_only(archive: Archive) -> None:
    study_uid = str(_study(archive)[0].StudyInstanceUID)
    doc = _physician(archive)
    draft = service.create_draft(archive, doc, study_uid, DraftRequest(sections=ReportSections(findings="Draft.")),
                                 citable=[], source="10.0.0.9")  # fmt: skip
    assert draft.status == "draft" and draft.version is None and draft.modality == "CT" and draft.title == "CT report"
    saved = service.update_draft(archive, doc, study_uid, draft.id, DraftRequest(sections=TEXT), citable=[])
    assert saved.sections == TEXT
    staff = service.list_versions(archive.engine, AccessScope.everything(), study_uid, latest_signed_only=False)
    assert [v.id for v in staff] == [draft.id]
    assert service.list_versions(archive.engine, AccessScope.everything(), study_uid, latest_signed_only=True) == []
    with pytest.raises(Conflict, match="already has a draft"):
        service.create_draft(archive, doc, study_uid, DraftRequest(), citable=[])
    trail = audit_query(archive.engine, AuditQuery(study_uid=study_uid, action="report-draft"))
    assert len(trail) == 2 and {e.username for e in trail} == {"drjane"} and trail[-1].source == "10.0.0.9"
    with pytest.raises(NotFound):
        service.create_draft(archive, doc, "1.2.3.4.5", DraftRequest(), citable=[])


def test_citations_are_checked(archive: Archive) -> None:
    study = _study(archive)
    other = _study(archive, patient=2, seed=8)
    study_uid = str(study[0].StudyInstanceUID)
    doc = _physician(archive)
    foreign = KeyImage(series_uid=str(other[0].SeriesInstanceUID), sop_uid=str(other[0].SOPInstanceUID))
    with pytest.raises(InvalidQuery, match="not an instance of this study"):
        service.create_draft(archive, doc, study_uid, DraftRequest(key_images=[foreign]), citable=[])
    with pytest.raises(InvalidQuery, match="only AI findings a physician accepted"):
        service.create_draft(archive, doc, study_uid, DraftRequest(ai_findings=["1.2.3"]), citable=[])
    empty = service.create_draft(archive, doc, study_uid, DraftRequest(), citable=[])
    with pytest.raises(InvalidQuery, match="empty report cannot be signed"):
        service.sign_draft(archive, doc, study_uid, empty.id)


def test_signing_stores_sr_pdf_and_kos_with_the_event(archive: Archive, tmp_path: Path) -> None:
    study = _study(archive)
    study_uid = str(study[0].StudyInstanceUID)
    doc = _physician(archive)
    key = KeyImage(series_uid=str(study[1].SeriesInstanceUID), sop_uid=str(study[1].SOPInstanceUID))
    draft = service.create_draft(archive, doc, study_uid, DraftRequest(sections=TEXT, key_images=[key]), citable=[])
    before = datetime.now(UTC) - timedelta(seconds=1)
    signed = service.sign_draft(archive, doc, study_uid, draft.id, source="10.0.0.9")
    assert (signed.status, signed.version, signed.signer_name, signed.signed_by) == ("signed", 1, "Jane Doe", "drjane")
    assert signed.signed_at is not None and signed.signed_at >= before
    assert signed.sr_uid and signed.pdf_uid and signed.kos_uid
    with pytest.raises(Conflict, match="already signed"):
        service.sign_draft(archive, doc, study_uid, draft.id)
    with pytest.raises(Conflict, match="cannot change"):
        service.update_draft(archive, doc, study_uid, draft.id, DraftRequest(sections=TEXT), citable=[])

    sr = _read(archive, study_uid, signed.sr_uid)
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.StudyInstanceUID) == ("COMPLETE", "VERIFIED", study_uid)
    observer = sr.VerifyingObserverSequence[0]
    assert str(observer.VerifyingObserverName) == "Doe^Jane" and observer.VerifyingOrganization == HOSPITAL
    assert datetime.strptime(observer.VerificationDateTime[:14], "%Y%m%d%H%M%S").astimezone(UTC) >= \
        before.replace(microsecond=0)  # fmt: skip
    texts = [i.TextValue for c in sr.ContentSequence if c.ValueType == "CONTAINER" for i in c.ContentSequence
             if i.ValueType == "TEXT"]  # fmt: skip
    assert TEXT.impression in texts and TEXT.findings in texts
    images = [i for c in sr.ContentSequence if c.ValueType == "CONTAINER" for i in c.ContentSequence
              if i.ValueType == "IMAGE"]  # fmt: skip
    assert images[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == key.sop_uid
    pdf = _read(archive, study_uid, signed.pdf_uid)
    assert pdf.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert pdf.MIMETypeOfEncapsulatedDocument == "application/pdf"
    text = _pdf_text(pdf)
    for expected in (HOSPITAL, "Jürgen Müller", study_uid, "Solitary pulmonary nodule", "Signed by Jane Doe"):
        assert expected in text, text
    kos = _read(archive, study_uid, signed.kos_uid)
    assert kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == key.sop_uid  # fmt: skip
    assert len({sr.SeriesInstanceUID, pdf.SeriesInstanceUID, kos.SeriesInstanceUID, study[0].SeriesInstanceUID}) == 4
    for ds in (sr, pdf, kos):
        _valid(ds, tmp_path)

    with archive.engine.connect() as conn:
        events = conn.execute(select(OutboxEvent).where(OutboxEvent.event == EVENT_REPORT_SIGNED)).all()
    assert len(events) == 1 and events[0].study_uid == study_uid
    [entry] = [e for e in read_feed(archive.engine, limit=1000) if e.action.value == "report-signed"]
    assert entry.detail is not None and (entry.detail["report_id"], entry.detail["version"]) == (draft.id, 1)
    [signature] = audit_query(archive.engine, AuditQuery(study_uid=study_uid, action="report-sign"))
    assert signature.username == "drjane" and "version 1" in signature.detail


def test_an_amendment_supersedes_the_signed_version(archive: Archive, tmp_path: Path) -> None:
    study_uid = str(_study(archive)[0].StudyInstanceUID)
    doc = _physician(archive)
    first = service.sign_draft(archive, doc, study_uid, service.create_draft(
        archive, doc, study_uid, DraftRequest(sections=TEXT), citable=[]).id)  # fmt: skip
    amendment = service.start_amendment(archive, doc, study_uid, first.id)
    assert amendment.status == "draft" and amendment.supersedes_id == first.id and amendment.sections == TEXT
    with pytest.raises(Conflict, match="only the current signed version"):
        service.start_amendment(archive, doc, study_uid, amendment.id)
    corrected = TEXT.model_copy(update={"impression": "Nodule is 14 mm; follow-up CT in 6 weeks."})
    service.update_draft(archive, doc, study_uid, amendment.id, DraftRequest(sections=corrected), citable=[])
    second = service.sign_draft(archive, doc, study_uid, amendment.id)
    assert (second.version, second.supersedes_id, second.amended) == (2, first.id, True)

    versions = service.list_versions(archive.engine, AccessScope.everything(), study_uid, latest_signed_only=False)
    assert [(v.id, v.status, v.superseded_by_id) for v in versions] == [
        (second.id, "signed", None), (first.id, "superseded", second.id)]
    latest = service.latest_signed(archive.engine, AccessScope.studies(study_uid), study_uid)
    assert latest is not None and latest.id == second.id and latest.sections.impression == corrected.impression
    with pytest.raises(NotFound):
        service.get_version(archive.engine, AccessScope.studies(study_uid), study_uid, first.id,
                            latest_signed_only=True)  # fmt: skip
    sr = _read(archive, study_uid, second.sr_uid)
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first.sr_uid
    _valid(sr, tmp_path)
    assert "amended" in _pdf_text(_read(archive, study_uid, second.pdf_uid))
    [amend] = audit_query(archive.engine, AuditQuery(study_uid=study_uid, action="report-amend"))
    assert f"superseding report {first.id}" in amend.detail
    assert service.signed_studies(archive.engine, [study_uid, "1.2.3"], DEFAULT_PARTITION) == {study_uid}


def test_a_ris_report_is_stored_signed_by_its_author(archive: Archive) -> None:
    study_uid = str(_study(archive)[0].StudyInstanceUID)
    doc = _physician(archive)
    draft = service.create_draft(archive, doc, study_uid, DraftRequest(sections=TEXT), citable=[])
    when = datetime(2024, 1, 16, 14, 5, 0, tzinfo=timezone(timedelta(hours=1)))
    external = service.sign_external_report(archive, study_uid, "Alan Smithee",
                                            ReportSections(impression="No acute findings."), when)  # fmt: skip
    assert (external.status, external.version, external.signer_name, external.source) == (
        "signed", 1, "Alan Smithee", "external")
    sr = _read(archive, study_uid, external.sr_uid)
    observer = sr.VerifyingObserverSequence[0]
    assert str(observer.VerifyingObserverName) == "Smithee^Alan"
    assert datetime.strptime(observer.VerificationDateTime, "%Y%m%d%H%M%S%z") == when
    # the physician's draft stays a draft and, signed later, supersedes the RIS's version
    mine = service.sign_draft(archive, doc, study_uid, draft.id)
    assert (mine.version, mine.supersedes_id) == (2, external.id)
    with pytest.raises(InvalidQuery):
        service.sign_external_report(archive, study_uid, "Alan Smithee", TEXT, datetime(2024, 1, 16))
    with pytest.raises(NotFound):
        service.sign_external_report(archive, "1.2.3.4", "Alan Smithee", TEXT, when)
    trail = audit_query(archive.engine, AuditQuery(study_uid=study_uid, action="report-sign"))
    assert [e.username for e in trail] == ["Alan Smithee"]


def test_cited_ai_findings_are_referenced(archive: Archive, tmp_path: Path) -> None:
    """A cited finding is a TEXT item inferred from the review SR it names (here any SR of the study)."""
    study = _study(archive)
    study_uid = str(study[0].StudyInstanceUID)
    doc = _physician(archive)
    first = service.sign_draft(archive, doc, study_uid, service.create_draft(
        archive, doc, study_uid, DraftRequest(sections=TEXT), citable=[]).id)  # fmt: skip
    cited = CitedFinding(document_uid=first.sr_uid, label="Mass", decision="edited", reviewer="drjane",
                         plugin="lesion-detector@1.0")  # fmt: skip
    amendment = service.start_amendment(archive, doc, study_uid, first.id)
    service.update_draft(archive, doc, study_uid, amendment.id, DraftRequest(sections=TEXT,
                         ai_findings=[cited.document_uid]), citable=[cited])  # fmt: skip
    second = service.sign_draft(archive, doc, study_uid, amendment.id)
    assert second.ai_findings == [cited]
    sr = _read(archive, study_uid, second.sr_uid)
    findings = next(c for c in sr.ContentSequence if c.ValueType == "CONTAINER"
                    and c.ConceptNameCodeSequence[0].CodeValue == "59776-5")  # fmt: skip
    item = next(i for i in findings.ContentSequence if "Mass" in i.get("TextValue", ""))
    assert item.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.sr_uid
    _valid(sr, tmp_path)


def test_c_find_lists_the_report_documents(tmp_path: Path) -> None:
    settings = dicom_settings(Settings(data_dir=tmp_path / "data", http_port=0, institution_name=HOSPITAL))
    with running(settings) as node:
        study_uid = str(_study(node.archive)[0].StudyInstanceUID)
        doc = _physician(node.archive)
        signed = service.sign_draft(node.archive, doc, study_uid, service.create_draft(
            node.archive, doc, study_uid, DraftRequest(sections=TEXT), citable=[]).id)  # fmt: skip
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = ""
        query.SOPInstanceUID = ""
        query.SOPClassUID = ""
        found: dict[str, str] = {}
        for series in {str(s.SeriesInstanceUID) for s in _series(node, study_uid)}:
            query.SeriesInstanceUID = series
            assoc = node.associate([build_context(StudyRootQueryRetrieveInformationModelFind)])
            try:
                for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                    if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                        found[str(identifier.SOPInstanceUID)] = str(identifier.SOPClassUID)
            finally:
                assoc.release()
    assert found[signed.sr_uid] == "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
    assert found[signed.pdf_uid] == "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF


def _series(node: object, study_uid: str) -> list[Dataset]:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    assoc = node.associate([build_context(StudyRootQueryRetrieveInformationModelFind)])  # type: ignore[attr-defined]
    try:
        answers = assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        return [identifier for status, identifier in answers
                if status and status.Status in (0xFF00, 0xFF01) and identifier is not None]
    finally:
        assoc.release()
