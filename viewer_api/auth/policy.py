"""Which kind of caller may reach which route, before any handler runs.

Study visibility is decided by the caller's scope in the query layer; this table only decides
who may knock at all: public paths, what a share visitor may open (its one study: the viewer,
DICOMweb under ``/studies/{uid}`` and the downloads; never a list or a search), and the routes
that need a role whatever the study (STOW-RS, DELETE, metrics). A plugin job token reaches its one
study's DICOMweb resources and STOW-RS into that study, nothing else. Routes not listed need a signed-in
user of any role; handlers may narrow further with ``require_roles``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from pacs.accounts.principal import Principal

SHARE = "share"  # stands for a share visitor in ``Rule.allowed``
ANY_USER = frozenset({"admin", "physician", "patient", "vendor"})
READ = frozenset({"GET", "HEAD"})
ANY_METHOD = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

PUBLIC_EXACT = frozenset({"/healthz", "/readyz", "/login", "/logout", "/api/auth/token", "/favicon.ico",
                          "/robots.txt"})
PUBLIC_PREFIXES = ("/static/", "/s/")


@dataclass(frozen=True, slots=True)
class Rule:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    allowed: frozenset[str]


def _rule(methods: frozenset[str], pattern: str, *allowed: str) -> Rule:
    return Rule(methods, re.compile(pattern), frozenset(allowed))


_STUDY = r"/[^/]+"
RULES: tuple[Rule, ...] = (
    # DICOMweb: writes by staff, deletes by admins; reads of one study also by share visitors.
    _rule(frozenset({"POST", "PUT"}), r"^/dicomweb/studies(/[^/]+)?/?$", "admin", "physician"),
    _rule(frozenset({"DELETE"}), r"^/dicomweb/", "admin"),
    _rule(ANY_METHOD - READ, r"^/dicomweb/", "admin", "physician"),
    _rule(READ, rf"^/dicomweb/studies{_STUDY}(/.*)?$", *ANY_USER, SHARE),
    _rule(READ, r"^/wado/?$", *ANY_USER, SHARE),
    # The landing page, the viewer of one study and its downloads (the handlers check allow_download).
    _rule(READ, r"^/(viewer/?)?$", *ANY_USER, SHARE),
    _rule(READ, rf"^/viewer/studies{_STUDY}/?$", *ANY_USER, SHARE),
    _rule(READ, rf"^/api/studies{_STUDY}/(film\.png|film\.pdf|archive\.zip|findings)$", *ANY_USER, SHARE),
    _rule(READ, r"^/api/auth/me$", *ANY_USER, SHARE),
    # Operations.
    _rule(ANY_METHOD, r"^/metrics$", "admin"),
)


def job_may(study_uid: str, method: str, path: str) -> bool:
    """A plugin job token reads its study under DICOMweb and STOWs into ``/dicomweb/studies/{its uid}`` only."""
    prefix = f"/dicomweb/studies/{study_uid}"
    if method in READ:
        return path == prefix or path.startswith(prefix + "/")
    return method == "POST" and path.rstrip("/") == prefix


class Decision(Enum):
    ALLOW = "allow"
    UNAUTHENTICATED = "unauthenticated"  # 401
    FORBIDDEN = "forbidden"  # 403


def is_public(path: str) -> bool:
    return path in PUBLIC_EXACT or path.startswith(PUBLIC_PREFIXES)


def decide(method: str, path: str, principal: Principal | None) -> Decision:
    """Whether ``principal`` may call ``method path`` at all (the handler still applies the scope)."""
    if is_public(path) or method == "OPTIONS":  # CORS preflights carry no credentials
        return Decision.ALLOW
    if principal is None:
        return Decision.UNAUTHENTICATED
    if principal.job is not None and principal.role is None:
        return Decision.ALLOW if job_may(principal.job.study_uid, method, path) else Decision.FORBIDDEN
    kinds = {principal.role} if principal.role else {SHARE}
    for rule in RULES:
        if method in rule.methods and rule.pattern.match(path):
            return Decision.ALLOW if kinds & rule.allowed else Decision.FORBIDDEN
    return Decision.ALLOW if principal.role is not None else Decision.FORBIDDEN
