"""Report templates per modality: the document title and what each section starts with.

Every template has the same four sections (clinical information, technique, findings,
impression); a modality changes the title and the technique's opening words, which the physician
completes. Unknown modalities get the general template.
"""

from __future__ import annotations

from dataclasses import dataclass

from pacs.reports.types import ReportSections


@dataclass(frozen=True, slots=True)
class ReportTemplate:
    modality: str
    title: str
    start: ReportSections


def _template(modality: str, title: str, technique: str) -> ReportTemplate:
    return ReportTemplate(modality, title, ReportSections(technique=technique))


TEMPLATES: dict[str, ReportTemplate] = {t.modality: t for t in (
    _template("CT", "CT report", "CT of the … without / with intravenous contrast. Slice thickness … mm."),
    _template("MR", "MRI report", "MRI of the … Sequences: …"),
    _template("CR", "Radiograph report", "Radiograph of the …, … views."),
    _template("DX", "Radiograph report", "Digital radiograph of the …, … views."),
    _template("US", "Ultrasound report", "Ultrasound of the …"),
    _template("MG", "Mammography report", "Mammography, … views. Breast composition: …"),
    _template("PT", "PET report", "PET/CT with … MBq of … ; uptake time … min."),
    _template("NM", "Nuclear medicine report", "Scintigraphy with … MBq of …"),
    _template("XA", "Angiography report", "Angiography of the …"),
)}  # fmt: skip
GENERAL = ReportTemplate("", "Imaging report", ReportSections())
#: Modalities of the archive's own documents, never the modality a report is about.
_DOCUMENT_MODALITIES = frozenset({"SR", "DOC", "KO", "PR", "SEG", "REG", "OT"})


def template_for(modality: str) -> ReportTemplate:
    return TEMPLATES.get(modality.upper(), GENERAL)


def study_modality(modalities: list[str]) -> str:
    """The imaging modality a study's report is about (the first that is not a document's)."""
    for modality in modalities:
        if modality.upper() not in _DOCUMENT_MODALITIES:
            return modality.upper()
    return ""
