"""A signed report as PDF (fpdf2), and that PDF as a DICOM Encapsulated PDF (PS3.3 A.45.1).

The PDF is for people and for viewers and archives that cannot render SR: the hospital's name,
the patient and the study, the report's sections, the key images and cited findings by name, and
who signed it when. Text is set in DejaVu Sans (shipped with matplotlib, a dependency) so any
patient name prints; without it, the core Helvetica font with unprintable letters replaced.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import highdicom as hd
from fpdf import FPDF
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, EncapsulatedPDFStorage, ExplicitVRLittleEndian

from pacs.reports.documents import MANUFACTURER, PDF_SERIES_NUMBER, REPORT_TITLE, SignedContent, series_uid

#: Patient and General Study attributes: Type 2 (always present, maybe empty), then Type 3 (when known).
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")
_TYPE3 = ("IssuerOfPatientID", "StudyDescription")


@cache
def _font_dir() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"
    return folder if (folder / "DejaVuSans.ttf").is_file() else None


def _person(value: object) -> str:
    """``Doe^Jane`` → ``Jane Doe`` for reading."""
    parts = str(value or "").split("=")[0].split("^")
    family, given = (parts + ["", ""])[:2]
    return " ".join(p for p in (given, family) if p).strip() or "—"


def _date(value: object) -> str:
    text = str(value or "")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) >= 8 and text[:8].isdigit() else (text or "—")


class _Document(FPDF):
    def __init__(self) -> None:
        super().__init__(format="A4")
        folder = _font_dir()
        self.family = "Helvetica"
        if folder is not None:
            self.add_font("DejaVu", "", str(folder / "DejaVuSans.ttf"))
            self.add_font("DejaVu", "B", str(folder / "DejaVuSans-Bold.ttf"))
            self.family = "DejaVu"
        self.set_margins(18, 18, 18)
        self.set_auto_page_break(True, 18)

    def text_of(self, value: str) -> str:
        if self.family == "DejaVu":
            return value
        return value.encode("latin-1", "replace").decode("latin-1")

    def line(self, text: str, *, size: float = 10, bold: bool = False, gap: float = 1.5) -> None:  # type: ignore[override]
        self.set_font(self.family, "B" if bold else "", size)
        self.multi_cell(0, size * 0.5, self.text_of(text), new_x="LMARGIN", new_y="NEXT")
        self.ln(gap)


def render_pdf(content: SignedContent) -> bytes:
    """The PDF of one signed version."""
    study = content.study
    doc = _Document()
    doc.set_title(content.title)
    doc.set_author(content.signer_name)
    doc.set_creator(MANUFACTURER)
    doc.add_page()
    if content.institution:
        doc.line(content.institution, size=15, bold=True)
    heading = content.title + (f" (version {content.version}, amended)" if content.predecessor is not None
                               else f" (version {content.version})")  # fmt: skip
    doc.line(heading, size=13, bold=True, gap=3)
    doc.line(f"Patient: {_person(study.get('PatientName'))}   ID: {study.get('PatientID', '') or '—'}   "
             f"Born: {_date(study.get('PatientBirthDate'))}   Sex: {study.get('PatientSex', '') or '—'}")
    doc.line(f"Study: {study.get('StudyDescription', '') or '—'}   Date: {_date(study.get('StudyDate'))}   "
             f"Accession: {study.get('AccessionNumber', '') or '—'}")
    doc.line(f"Study Instance UID: {study.StudyInstanceUID}", size=8, gap=4)
    if content.predecessor is not None:
        doc.line("This amended report replaces the earlier version, which is superseded.", bold=True, gap=3)
    for title, text in content.sections.titled():
        doc.line(title, size=11, bold=True, gap=0.5)
        doc.line(text, gap=3)
    if content.key_images or content.cited:
        doc.line("Cited", size=11, bold=True, gap=0.5)
        for image in content.key_images:
            doc.line(f"Key image: series {image.get('SeriesNumber', '')}, image {image.get('InstanceNumber', '')} "
                     f"({image.SOPInstanceUID})", size=9, gap=0.5)
        for finding, _review in content.cited:
            doc.line(finding.sentence(), size=9, gap=0.5)
        doc.ln(3)
    doc.line(f"Signed by {content.signer_name} on {content.signed_at.astimezone():%Y-%m-%d %H:%M %Z}",
             bold=True, gap=1)
    return bytes(doc.output())


def encapsulate(content: SignedContent, pdf: bytes) -> Dataset:
    """The PDF as an Encapsulated PDF instance in the study's report-PDF series."""
    study = content.study
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyInstanceUID = study.StudyInstanceUID
    for keyword in _TYPE2:
        setattr(ds, keyword, study.get(keyword, ""))
    for keyword in _TYPE3:
        if keyword in study:
            setattr(ds, keyword, study.get(keyword))
    local = content.signed_at.astimezone()
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = hd.UID()
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_uid(str(study.StudyInstanceUID), "pdf")
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.SeriesDescription = "Physician report (PDF)"
    ds.Manufacturer = MANUFACTURER
    if content.institution:
        ds.InstitutionName = content.institution
    ds.ConversionType = "WSD"  # workstation
    ds.InstanceNumber = content.version
    ds.ContentDate, ds.ContentTime = local.strftime("%Y%m%d"), local.strftime("%H%M%S")
    ds.AcquisitionDateTime = local.strftime("%Y%m%d%H%M%S%z")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = content.title[:64]
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = (
        REPORT_TITLE.value, REPORT_TITLE.scheme_designator, REPORT_TITLE.meaning)
    ds.ConceptNameCodeSequence = [concept]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")  # OB values have even length
    ds.EncapsulatedDocumentLength = len(pdf)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def pdf_bytes(ds: Dataset) -> bytes:
    """The PDF inside an Encapsulated PDF instance (without the pad byte)."""
    data = bytes(ds.EncapsulatedDocument)
    length = int(ds.get("EncapsulatedDocumentLength") or 0)
    return data[:length] if 0 < length <= len(data) else data.rstrip(b"\0")
