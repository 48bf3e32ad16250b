"""What a route's requests stand for in the audit trail, declared with the route's access rule.

A route whose requests the trail needs names an :class:`Audit` in its rule
(:mod:`viewer_api.auth.access`); the security middleware records the event once the response has
gone out, with its final status, so refusals (401/403) and failures are recorded as well as
successes. Declared: STOW-RS (``stow``), deletes, study searches (``search``), retrieval of DICOM
objects (``download``), change feed reads (``changefeed``), webhook administration (``webhook``)
and the opening of a study's metadata, which is how DICOMweb viewers such as
OHIF open a study (``view``). Frames, rendered images and thumbnails declare none: the viewer page
that shows them already was recorded. HEAD requests transfer nothing and are never recorded.

A clinician share's DICOMweb token is the exception: every request made with it is recorded
(:func:`share_token_event`), HEAD, frames and refusals included, as its sharer was promised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pacs.accounts.audit import Action, Outcome

_DICOMWEB = "/dicomweb"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the trail may say about one finished request."""

    method: str
    path: str
    query: str  # the raw query string
    query_params: Mapping[str, str]
    path_params: Mapping[str, str]
    status: int

    @property
    def study(self) -> str:
        return str(self.path_params.get("study", ""))[:64]


@dataclass(frozen=True, slots=True)
class HttpAuditEvent:
    action: Action
    outcome: Outcome
    study_uid: str
    detail: str


@dataclass(frozen=True, slots=True)
class Audit:
    """The action a route's requests are recorded as; ``describe`` gives (study UID, detail), or
    ``None`` for a request the trail does not need (a WADO-URI image rather than a DICOM object)."""

    action: Action
    describe: Callable[[RequestFacts], tuple[str, str] | None]

    def event(self, facts: RequestFacts) -> HttpAuditEvent | None:
        if facts.method == "HEAD":
            return None
        described = self.describe(facts)
        if described is None:
            return None
        study, detail = described
        return HttpAuditEvent(self.action, outcome_of(facts.status), study, detail[:500])


def outcome_of(status: int) -> Outcome:
    if status < 400:
        return Outcome.SUCCESS
    if status in (401, 403):
        return Outcome.DENIED
    return Outcome.ERROR if status >= 500 else Outcome.FAILURE


def _wado_uri(facts: RequestFacts) -> tuple[str, str] | None:
    if facts.query_params.get("contentType", "") != "application/dicom":
        return None  # rendered images are part of a page already recorded
    return facts.query_params.get("studyUID", "")[:64], "WADO-URI application/dicom"


#: STOW-RS (PS3.18 10.5), into any study or the one in the URL.
STOW = Audit(Action.STOW, lambda f: (f.study, f"STOW-RS {f.status}"))
#: DELETE of a study, series or instance (and attempts on paths that do not allow it).
DELETE = Audit(Action.DELETE, lambda f: (f.study, f"{f.path} {f.status}"))
#: QIDO-RS search for studies: the query is the detail.
SEARCH = Audit(Action.SEARCH, lambda f: ("", f"QIDO-RS {f.query}"))
#: WADO-RS metadata of a whole study: how DICOMweb viewers open a study.
VIEW_METADATA = Audit(Action.VIEW, lambda f: (f.study, "WADO-RS metadata"))
#: WADO-RS retrieval of DICOM objects (a study, a series or an instance).
RETRIEVE = Audit(Action.DOWNLOAD, lambda f: (f.study, f"WADO-RS {f.path.removeprefix(_DICOMWEB)}"))
#: WADO-URI (PS3.18 9): recorded when it hands out the DICOM object itself.
WADO_URI = Audit(Action.DOWNLOAD, _wado_uri)
#: Change feed reads: the page asked for is the detail.
CHANGEFEED = Audit(Action.CHANGEFEED, lambda f: ("", f"{f.path} {f.query}".strip()))
#: Webhook registrations, listings, deletions and delivery logs.
WEBHOOK = Audit(Action.WEBHOOK, lambda f: ("", f"{f.method} {f.path} {f.status}"))
#: Routing state reads and re-sends.
ROUTING = Audit(Action.ROUTING, lambda f: ("", f"{f.method} {f.path} {f.status}"))
#: Modality worklist entries scheduled, read or cancelled through the admin API.
WORKLIST = Audit(Action.WORKLIST, lambda f: ("", f"{f.method} {f.path} {f.status}"))
#: Algorithm package files fetched by edge workers: the SHA-256 asked for is in the path.
PACKAGE_DOWNLOAD = Audit(Action.PACKAGE_DOWNLOAD, lambda f: ("", f"{f.method} {f.path} {f.status}"))
#: Reads of the patient message log (it holds addresses) and re-sends.
NOTIFICATIONS = Audit(Action.NOTIFICATIONS, lambda f: ("", f"{f.method} {f.path} {f.status}"))


def _share_token_use(facts: RequestFacts) -> tuple[str, str]:
    return facts.study, f"{facts.method} {facts.path} {facts.status}"


#: A request with a clinician share's DICOMweb token that its route records as nothing else.
SHARE_TOKEN = Audit(Action.SHARE_TOKEN, _share_token_use)


def share_token_event(declared: Audit | None, facts: RequestFacts, study_uid: str) -> HttpAuditEvent:
    """The record of a request made with a clinician share's DICOMweb token (every one): as its route
    declares when it does, else as ``share-token``; the share's study when the path names none."""
    described = declared.describe(facts) if declared is not None else None
    action = declared.action if declared is not None and described is not None else SHARE_TOKEN.action
    study, detail = described or _share_token_use(facts)
    return HttpAuditEvent(action, outcome_of(facts.status), study or study_uid, detail[:500])
#: The instances rejection notes withheld, listed through the admin API.
REJECTION = Audit(Action.REJECTION,
                  lambda f: (str(f.query_params.get("study", ""))[:64], f"{f.method} {f.path} {f.status}"))
