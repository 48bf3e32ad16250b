"""Who may see which studies: the one access filter every query and retrieve applies.

An :class:`AccessScope` is built once per request or association from the principal (see the
accounts layer) and handed to :mod:`pacs.query` and :mod:`pacs.retrieve`, so QIDO, WADO, C-FIND,
C-MOVE, the viewer and downloads cannot disagree. Studies outside the scope do not exist for the
caller: they answer "not found", never "forbidden", so their existence does not leak.

Inside a visible study a scope may also withhold result objects (SR, SEG, parametric maps: what
AI and measurement tools produce) but the released ones: from patients and share visitors all but
those a physician released, from a plugin job all but its own vendor's. A withheld instance is not
listed (QIDO at IMAGE level; a series holding nothing else is not listed either) and not
retrievable, exactly like an instance outside the scope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, exists, false, or_, true, tuple_

from pacs.index.models import Instance, Series, Study

#: SOP classes of result objects: the SR family (PS3.4 B.5, ``…1.1.88.*``, by prefix) and these:
#: Segmentation, Surface Segmentation, Parametric Map. AI output and measurements arrive as these,
#: whoever sends them, so a patient-facing scope withholds them by class rather than trusting every
#: sender to say what it is.
RESULT_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
RESULT_CLASSES: frozenset[str] = frozenset({
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.66.5",  # Surface Segmentation
    "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map
})


@dataclass(frozen=True, slots=True)
class AccessScope:
    """The set of studies a caller may see."""

    all_studies: bool = False
    study_uids: frozenset[str] = field(default_factory=frozenset)
    patient_keys: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (PatientID, Issuer)
    hidden_study_uids: frozenset[str] = field(default_factory=frozenset)  # never visible, whatever else
    # Inside the visible studies: result objects withheld, but the released ones.
    withhold_results: bool = False
    released_sop_uids: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def everything(cls) -> AccessScope:
        return cls(all_studies=True)

    @classmethod
    def nothing(cls) -> AccessScope:
        return cls()

    @classmethod
    def studies(cls, *uids: str) -> AccessScope:
        return cls(study_uids=frozenset(uids))

    def study_filter(self) -> Any:
        """A SQL condition on :class:`~pacs.index.models.Study` rows."""
        allowed: Any
        if self.all_studies:
            allowed = true()
        else:
            parts: list[Any] = []
            if self.study_uids:
                parts.append(Study.study_uid.in_(sorted(self.study_uids)))
            if self.patient_keys:
                parts.append(tuple_(Study.patient_id, Study.issuer).in_(sorted(self.patient_keys)))
            allowed = or_(*parts) if parts else false()
        if self.hidden_study_uids:
            return and_(allowed, Study.study_uid.not_in(sorted(self.hidden_study_uids)))
        return allowed

    def instance_filter(self) -> Any:
        """A SQL condition on :class:`~pacs.index.models.Instance` rows of visible studies."""
        if not self.withhold_results:
            return true()
        result = or_(Instance.sop_class_uid.like(RESULT_CLASS_PREFIX + "%"),
                     Instance.sop_class_uid.in_(sorted(RESULT_CLASSES)))  # fmt: skip
        if self.released_sop_uids:
            result = and_(result, Instance.sop_uid.not_in(sorted(self.released_sop_uids)))
        return ~result

    def series_filter(self) -> Any:
        """A SQL condition on :class:`~pacs.index.models.Series` rows: some instance of it is visible."""
        if not self.withhold_results:
            return true()
        return exists().where(Instance.series_fk == Series.id, self.instance_filter())

    def allows(self, study_uid: str, patient_id: str = "", issuer: str = "") -> bool:
        if study_uid in self.hidden_study_uids:
            return False
        return self.all_studies or study_uid in self.study_uids or (patient_id, issuer) in self.patient_keys


#: The scope of one request, built when it arrives (what is hidden can change between requests).
ScopeProvider = Callable[[], AccessScope]
