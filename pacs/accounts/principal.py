"""Who is calling, and the :class:`~pacs.access.AccessScope` that follows from it.

A principal is a user (admin, physician, patient, vendor), a visitor holding an opened share link,
a clinician elsewhere holding a share's DICOMweb token, a vendor-hosted plugin holding a job token,
an edge worker (which sees no study at all: it leases jobs, and reads each job's study with that
job's token), or a user and a share link at once (a signed-in
patient who opened a share link to claim the study). ``scope_for`` is the only place where roles
turn into visible studies: admin and physician see every study; a
patient sees the studies of the (PatientID, IssuerOfPatientID) pairs linked to the account; a
vendor sees nothing directly; an opened share, a share's DICOMweb token or a plugin job adds exactly
its one study. Inside those studies, patients and share visitors (DICOMweb tokens included) see no
result objects (SR, SEG) but those a physician released, and a plugin job none but its own vendor's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from pacs.access import DEFAULT_PARTITION, REJECTED, SUPERSEDED, AccessScope

Role = Literal["admin", "physician", "patient", "vendor"]
Via = Literal["session", "bearer", "api_key", "share", "share_token", "local"]
STAFF_ROLES: frozenset[str] = frozenset({"admin", "physician"})


@dataclass(frozen=True, slots=True)
class ShareGrant:
    """An opened (and, when it has a PIN, unlocked) share link: one study."""

    share_id: int
    study_uid: str
    allow_download: bool
    partition: int = DEFAULT_PARTITION


@dataclass(frozen=True, slots=True)
class DicomwebGrant:
    """A clinician share's bearer token: reads one study over DICOMweb (QIDO-RS, WADO-RS), nothing else."""

    share_id: int
    study_uid: str
    partition: int = DEFAULT_PARTITION


@dataclass(frozen=True, slots=True)
class PluginJob:
    """A vendor-hosted plugin working on one job (its job token): reads one study, stores into it."""

    job_id: int
    study_uid: str
    plugin: str  # name@version


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request or command."""

    user_id: int | None = None
    username: str = ""
    role: Role | None = None
    patient_keys: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    share: ShareGrant | None = None
    via: Via = "session"
    job: PluginJob | None = None
    edge: str | None = None  # an edge worker, by name: reaches the edge job routes only
    dicomweb: DicomwebGrant | None = None
    # Benchmark studies (issue 7, ``ai_plugins.benchmarks.visibility``): hidden whatever the role
    # allows (test cases), and granted besides it (de-identified dev copies for vendors).
    hidden_study_uids: frozenset[str] = field(default_factory=frozenset)
    granted_study_uids: frozenset[str] = field(default_factory=frozenset)
    # The result objects (SR/SEG, ``pacs.access.RESULT_CLASSES``) a patient, share visitor or plugin
    # job may see, who see no others: the documents of AI findings a physician accepted (issue 13),
    # and for a job its own vendor's results.
    released_sop_uids: frozenset[str] = field(default_factory=frozenset)
    # The account's partition (pacs.partitions); an admin of the default partition acts in every one.
    partition: int = DEFAULT_PARTITION

    @classmethod
    def local_admin(cls) -> Principal:
        """The caller when authentication is turned off (loopback only) and for CLI commands."""
        return cls(username="local", role="admin", via="local")

    @property
    def in_every_partition(self) -> bool:
        """An admin of the default partition (and the local admin): sees into every partition."""
        return self.role == "admin" and self.partition == DEFAULT_PARTITION

    @property
    def home_partition(self) -> int:
        """The partition a request without one in its URL works in: the account's, else the share's."""
        if self.role is None and self.share is not None:
            return self.share.partition
        if self.role is None and self.dicomweb is not None:
            return self.dicomweb.partition
        return self.partition

    @property
    def is_user(self) -> bool:
        return self.role is not None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @property
    def label(self) -> str:
        """Who, in words, for the audit trail and page headers."""
        if self.role is not None:
            return self.username
        if self.job is not None:
            return f"job:{self.job.job_id}"
        if self.edge is not None:
            return f"edge:{self.edge}"
        if self.dicomweb is not None:
            return f"share:{self.dicomweb.share_id}"
        return f"share:{self.share.share_id}" if self.share else "anonymous"

    def has_role(self, *roles: str) -> bool:
        return self.role is not None and self.role in roles

    @property
    def sees_released_results_only(self) -> bool:
        """A patient, a share visitor (with a link or a DICOMweb token) or a plugin job (never staff): sees
        only the released result objects."""
        return self.role not in STAFF_ROLES and (self.role == "patient" or self.share is not None
                                                 or self.dicomweb is not None or self.job is not None)  # fmt: skip


def scope_for(principal: Principal, *, hidden_study_uids: frozenset[str] = frozenset(),
              partition: int | None = None) -> AccessScope:
    """The studies ``principal`` may see in ``partition`` (by default its home partition). ``hidden_study_uids``
    (and the principal's own) are withheld from all but admins; the principal's ``granted_study_uids`` are
    added to what its role sees.

    An account sees by its role only in its own partition (an admin of the default partition in every
    one); a share, a share's DICOMweb token and a plugin job only their study in its partition (jobs and
    benchmark copies live in the default partition)."""
    partition = principal.home_partition if partition is None else partition
    shared: frozenset[str] = frozenset()
    if principal.share is not None and principal.share.partition == partition:
        shared |= {principal.share.study_uid}
    if partition == DEFAULT_PARTITION:
        if principal.job is not None:
            shared |= {principal.job.study_uid}
        shared |= principal.granted_study_uids
    if principal.dicomweb is not None and principal.dicomweb.partition == partition:
        shared |= {principal.dicomweb.study_uid}
    role = principal.role if principal.partition == partition or principal.in_every_partition else None
    hidden = frozenset() if principal.role == "admin" else hidden_study_uids | principal.hidden_study_uids
    if role in STAFF_ROLES:
        scope = AccessScope(all_studies=True, hidden_study_uids=hidden, partition=partition)
    elif role == "patient":
        scope = AccessScope(study_uids=shared, patient_keys=principal.patient_keys, hidden_study_uids=hidden,
                            partition=partition)
    else:
        scope = AccessScope(study_uids=shared, hidden_study_uids=hidden, partition=partition)
    if not principal.sees_released_results_only:
        return scope
    # Patients and share visitors see neither unreleased results nor superseded report documents.
    return replace(scope, withhold_results=True, released_sop_uids=principal.released_sop_uids,
                   withheld_reasons=frozenset({REJECTED, SUPERSEDED}))


def may_download(principal: Principal, study_uid: str, patient_id: str, issuer: str) -> bool:
    """Downloads (ZIP, film sheets) of a visible study: staff, the owning patient, or a share that allows it."""
    if principal.role in STAFF_ROLES:
        return True
    if principal.role == "patient" and (patient_id, issuer) in principal.patient_keys:
        return True
    return principal.share is not None and principal.share.study_uid == study_uid and principal.share.allow_download
