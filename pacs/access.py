"""Who may see which studies: the one access filter every query and retrieve applies.

An :class:`AccessScope` is built once per request or association from the principal (see the
accounts layer) and handed to :mod:`pacs.query` and :mod:`pacs.retrieve`, so QIDO, WADO, C-FIND,
C-MOVE, the viewer and downloads cannot disagree. Studies outside the scope do not exist for the
caller: they answer "not found", never "forbidden", so their existence does not leak.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, false, or_, true, tuple_

from pacs.index.models import Study


@dataclass(frozen=True, slots=True)
class AccessScope:
    """The set of studies a caller may see."""

    all_studies: bool = False
    study_uids: frozenset[str] = field(default_factory=frozenset)
    patient_keys: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (PatientID, Issuer)
    hidden_study_uids: frozenset[str] = field(default_factory=frozenset)  # never visible, whatever else

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

    def allows(self, study_uid: str, patient_id: str = "", issuer: str = "") -> bool:
        if study_uid in self.hidden_study_uids:
            return False
        return self.all_studies or study_uid in self.study_uids or (patient_id, issuer) in self.patient_keys


#: The scope of one request, built when it arrives (what is hidden can change between requests).
ScopeProvider = Callable[[], AccessScope]
