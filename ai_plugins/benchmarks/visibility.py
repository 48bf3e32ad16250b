"""Which benchmark studies each kind of caller may see: the hidden-label rule, applied to principals.

Read from the benchmark tables on every request (two indexed queries), so a split or a new copy
takes effect at once, and handed to the one access filter through the principal
(``Principal.hidden_study_uids`` / ``granted_study_uids`` → :func:`pacs.accounts.principal.scope_for`):

========================  =====================================================================
caller                    benchmark studies
========================  =====================================================================
admin                     everything
physician                 the clinical studies (test cases included); not the de-identified copies
vendor                    the dev copies (granted); never a test case nor a test copy
patient, share visitor    never a test case nor any copy
plugin job token          its own study only; never a test case nor a test copy
hosted plugin endpoint    never called for a test case or a test copy (:func:`withheld_from_vendors`)
edge worker               none directly; never leases a job on a test case or any copy (:func:`benchmark_material`)
DICOM peer (C-FIND/MOVE)  as a physician: the clinical studies; never a copy
========================  =====================================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sqlalchemy import Engine, Select, select, union
from sqlalchemy.engine import Connection

from ai_plugins.benchmarks.models import BenchmarkCaseRow, BenchmarkCopyRow
from pacs.access import AccessScope
from pacs.accounts.principal import Principal


@dataclass(frozen=True, slots=True)
class BenchmarkVisibility:
    test_studies: frozenset[str]
    dev_copies: frozenset[str]
    eval_copies: frozenset[str]

    @property
    def copies(self) -> frozenset[str]:
        return self.dev_copies | self.eval_copies


def load_visibility(engine: Engine) -> BenchmarkVisibility:
    with engine.connect() as conn:
        tests = frozenset(conn.execute(select(BenchmarkCaseRow.study_uid).where(BenchmarkCaseRow.split == "test")
                                       .distinct()).scalars())  # fmt: skip
        copies = conn.execute(select(BenchmarkCopyRow.copy_study_uid, BenchmarkCopyRow.purpose)).all()
    return BenchmarkVisibility(tests, frozenset(u for u, p in copies if p == "dev"),
                               frozenset(u for u, p in copies if p != "dev"))  # fmt: skip


def restrict(principal: Principal, vis: BenchmarkVisibility) -> Principal:
    """``principal`` with the benchmark studies it must not see hidden and the dev copies it may see granted."""
    if principal.role == "admin":
        return principal
    granted: frozenset[str] = frozenset()
    if principal.role == "physician":
        hidden = vis.copies
    elif principal.role == "vendor":
        hidden, granted = vis.test_studies | vis.eval_copies, vis.dev_copies
    elif principal.role is None and principal.job is not None and principal.share is None:
        hidden = vis.test_studies | vis.eval_copies | (vis.dev_copies - {principal.job.study_uid})
    else:  # patients, share visitors
        hidden = vis.test_studies | vis.copies
    return dataclasses.replace(principal, hidden_study_uids=principal.hidden_study_uids | hidden,
                               granted_study_uids=principal.granted_study_uids | (granted - hidden))  # fmt: skip


#: Why a vendor-hosted plugin never runs on a test case (the API's 409 and the CLI say this sentence).
HOSTED_REFUSAL = ("hidden test cases never leave the archive, so a vendor-hosted plugin is never run on a benchmark "
                  "test case; upload it as an algorithm package to be evaluated in the archive's sandbox")


def withheld_from_vendors(conn: Connection, study_uid: str) -> bool:
    """Whether ``study_uid`` is a test case of any benchmark (or a copy made of one): its pixels,
    headers, labels and outputs never go to a vendor's hosted endpoint or job token."""
    test = conn.execute(select(BenchmarkCaseRow.id).where(BenchmarkCaseRow.study_uid == study_uid,
                                                          BenchmarkCaseRow.split == "test").limit(1)).first()
    if test is not None:
        return True
    copy = conn.execute(select(BenchmarkCopyRow.purpose).where(BenchmarkCopyRow.copy_study_uid == study_uid)).first()
    return copy is not None and copy.purpose != "dev"


def restrict_from_db(engine: Engine, principal: Principal | None) -> Principal | None:
    """:func:`restrict` with the visibility read now; ``None`` stays ``None``."""
    if principal is None or principal.role == "admin":
        return principal
    return restrict(principal, load_visibility(engine))


def clinical_system_scope(engine: Engine) -> AccessScope:
    """What a DICOM peer (a modality, a workstation, another PACS) may find and retrieve: what a
    physician sees, the clinical studies (test cases included) and never the de-identified copies,
    which are benchmark material, not patients' records."""
    return AccessScope(all_studies=True, hidden_study_uids=load_visibility(engine).copies)


def benchmark_material() -> Select[tuple[str]]:
    """The study UIDs of every benchmark test case and every de-identified copy: never leased to an edge
    worker, whose machine is outside the archive (hidden test cases never leave)."""
    studies = union(select(BenchmarkCaseRow.study_uid).where(BenchmarkCaseRow.split == "test"),
                    select(BenchmarkCopyRow.copy_study_uid)).subquery()  # fmt: skip
    return select(studies.c[0])
