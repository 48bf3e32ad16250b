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

A scope lies in one partition (a hospital, :mod:`pacs.partitions`): its study filter admits only that
partition's studies, whatever else it allows, so no query or retrieve crosses partitions.

Withheld instances (:class:`~pacs.index.models.WithheldInstance`) are hidden the same way, by
reason: ``rejected`` ones (IHE IOCM rejection notes, :mod:`pacs.rejection`) from every caller,
``superseded`` report documents from patients and share visitors. A series or study whose every
instance is withheld is not listed either, and study counts are those of what remains visible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import and_, exists, false, or_, true, tuple_
from sqlalchemy.orm import aliased

from pacs.index.models import Instance, Series, Study, WithheldInstance

#: The default partition (pacs.partitions), here too so that the access layer needs nothing above the index.
DEFAULT_PARTITION = 1

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

#: Withholding reasons (``WithheldInstance.reason``).
REJECTED = "rejected"
SUPERSEDED = "superseded"


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
    # Withheld instances of these reasons are hidden (rejected ones from everybody).
    withheld_reasons: frozenset[str] = frozenset({REJECTED})
    # The one partition (pacs.partitions) every study seen lies in: nothing crosses partitions.
    partition: int = DEFAULT_PARTITION

    @classmethod
    def everything(cls, partition: int = DEFAULT_PARTITION) -> AccessScope:
        return cls(all_studies=True, partition=partition)

    @classmethod
    def nothing(cls, partition: int = DEFAULT_PARTITION) -> AccessScope:
        return cls(partition=partition)

    @classmethod
    def studies(cls, *uids: str, partition: int = DEFAULT_PARTITION) -> AccessScope:
        return cls(study_uids=frozenset(uids), partition=partition)

    def in_partition(self, partition: int) -> AccessScope:
        """This scope, over ``partition``'s studies instead."""
        return replace(self, partition=partition)

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
        conds = [Study.partition_fk == self.partition, allowed]
        if self.hidden_study_uids:
            conds.append(Study.study_uid.not_in(sorted(self.hidden_study_uids)))
        if self.withheld_reasons:  # a study withholding something must keep a visible instance
            inner = aliased(Instance)  # the caller's query may select Instance itself
            conds.append(or_(~exists().where(WithheldInstance.study_uid == Study.study_uid,
                                             WithheldInstance.partition_fk == Study.partition_fk,
                                             self._withheld_reason()),
                             exists().where(inner.study_fk == Study.id, self.instance_filter(inner))))
        return and_(*conds)

    def _withheld_reason(self) -> Any:
        return WithheldInstance.reason.in_(sorted(self.withheld_reasons))

    def withheld_filter(self, instance: Any = Instance) -> Any:
        """A SQL condition on :class:`~pacs.index.models.Instance` rows: not withheld from this scope."""
        if not self.withheld_reasons:
            return true()
        return ~exists().where(WithheldInstance.sop_uid == instance.sop_uid,
                               WithheldInstance.partition_fk == instance.partition_fk, self._withheld_reason())

    def instance_filter(self, instance: Any = Instance) -> Any:
        """A SQL condition on :class:`~pacs.index.models.Instance` rows (or ``instance``, an alias) of
        visible studies."""
        if not self.withhold_results:
            return self.withheld_filter(instance)
        result = or_(instance.sop_class_uid.like(RESULT_CLASS_PREFIX + "%"),
                     instance.sop_class_uid.in_(sorted(RESULT_CLASSES)))  # fmt: skip
        if self.released_sop_uids:
            result = and_(result, instance.sop_uid.not_in(sorted(self.released_sop_uids)))
        return and_(~result, self.withheld_filter(instance)) if self.withheld_reasons else ~result

    def series_filter(self) -> Any:
        """A SQL condition on :class:`~pacs.index.models.Series` rows: some instance of it is visible."""
        inner = aliased(Instance)
        if self.withhold_results:
            return exists().where(inner.series_fk == Series.id, self.instance_filter(inner))
        if not self.withheld_reasons:
            return true()
        return or_(~exists().where(WithheldInstance.series_uid == Series.series_uid,
                                   WithheldInstance.partition_fk == Series.partition_fk, self._withheld_reason()),
                   exists().where(inner.series_fk == Series.id, self.instance_filter(inner)))

    @property
    def recounts(self) -> bool:
        """Whether stored counts may include instances this scope does not see (see pacs.query)."""
        return self.withhold_results or bool(self.withheld_reasons)

    def allows(self, study_uid: str, patient_id: str = "", issuer: str = "") -> bool:
        if study_uid in self.hidden_study_uids:
            return False
        return self.all_studies or study_uid in self.study_uids or (patient_id, issuer) in self.patient_keys


#: The scope of one request, built when it arrives (what is hidden can change between requests).
ScopeProvider = Callable[[], AccessScope]
