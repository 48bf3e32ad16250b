"""The ``[routing]`` table of the TOML config: destinations and the rules that forward to them.

```toml
[routing.destinations.pacs2]
kind = "dicom"
aet = "PACS2"
host = "10.0.0.5"
port = 104

[[routing.rules]]
name = "ct-to-pacs2"
on = "arrival"               # or "stable": every instance of the study once it is stable
to = ["pacs2"]
match = { Modality = "CT", calling_ae = "CT_SCANNER_1" }
partition = "default"        # the partition (pacs.partitions) whose change feed the rule follows
```

A rule matches an instance when every ``match`` entry does: ``calling_ae`` is the AE title that
sent it by C-STORE (kept in its File Meta Information, PS3.10 7.1), any other key is a DICOM
keyword read from the instance's indexed metadata (study, series and instance attributes). A
value is a pattern with ``*`` and ``?`` (case-insensitive), or a list of patterns of which any may
match; an attribute with several values matches when one of them does.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydicom.datadict import keyword_dict, tag_for_keyword

CALLING_AE = "calling_ae"
Trigger = Literal["arrival", "stable"]
DestinationKind = Literal["dicom", "dicomweb"]
_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


class Destination(BaseModel):
    """A peer instances are forwarded to: a DICOM node (``aet``, ``host``, ``port``, ``tls``) or a
    DICOMweb service (``url`` of its base, ``token`` sent as ``Authorization: Bearer``)."""

    kind: DestinationKind
    aet: str = ""
    host: str = ""
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: bool = False
    url: str = ""
    token: SecretStr | None = None
    # Send every instance in this syntax (Explicit or Implicit VR Little Endian) instead of the stored one.
    transfer_syntax: str | None = None
    concurrency: int = Field(default=2, ge=1, le=64)  # forwarding jobs running at once for this destination
    max_attempts: int = Field(default=10, ge=1, le=1000)  # attempts per instance before its dead letter
    timeout: float = Field(default=60.0, gt=0, le=3600)  # seconds to connect and per answer

    @field_validator("transfer_syntax")
    @classmethod
    def _check_syntax(cls, value: str | None) -> str | None:
        if value is not None and value not in _UNCOMPRESSED:
            raise ValueError(f"must be one of {', '.join(_UNCOMPRESSED)} (Explicit or Implicit VR Little Endian)")
        return value

    @model_validator(mode="after")
    def _check_peer(self) -> Destination:
        if self.kind == "dicom":
            if not self.aet or not self.host or self.port is None:
                raise ValueError("a dicom destination needs aet, host and port")
            if len(self.aet) > 16:
                raise ValueError("aet must be at most 16 characters")
        elif not self.url.startswith(("http://", "https://")):
            raise ValueError("a dicomweb destination needs url = the http(s):// base of its DICOMweb service")
        return self

    def label(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}" if self.kind == "dicom" else self.url


class Rule(BaseModel):
    """Which instances go where, when, and how they are changed on the way."""

    name: str = Field(min_length=1, max_length=64)
    on: Trigger = "arrival"
    to: list[str] = Field(min_length=1)
    match: dict[str, str | list[str]] = Field(default_factory=dict)
    deidentify: bool = False  # PS3.15 Basic Profile (pacs.deid), pseudonyms stable per rule
    # The partition (its slug) whose change feed the rule follows and whose instances it sends.
    partition: str = "default"

    @field_validator("match")
    @classmethod
    def _check_keys(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for key in value:
            if key != CALLING_AE and key not in keyword_dict:
                raise ValueError(f"{key!r} is neither calling_ae nor a DICOM keyword")
        return value

    @property
    def needs_calling_ae(self) -> bool:
        return CALLING_AE in self.match


def check_routing(destinations: dict[str, Destination], rules: list[Rule],
                  partitions: frozenset[str] = frozenset({"default"})) -> None:  # fmt: skip
    """``ValueError`` for a rule that names an unknown destination or partition, or shares its name with
    another."""
    names: set[str] = set()
    for rule in rules:
        if rule.name in names:
            raise ValueError(f"two routing rules are named {rule.name!r}")
        names.add(rule.name)
        if rule.partition not in partitions:
            raise ValueError(f"routing rule {rule.name!r} names unknown partition {rule.partition!r}")
        for dest in rule.to:
            if dest not in destinations:
                raise ValueError(f"routing rule {rule.name!r} names unknown destination {dest!r}")
    for name in destinations:
        if not 0 < len(name) <= 64:
            raise ValueError(f"destination name {name!r} must be 1 to 64 characters")


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a rule looks at: the instance's indexed metadata (DICOM JSON) and the AE that sent it."""

    metadata_json: str
    calling_ae: str = ""


def _values(metadata: dict[str, Any], keyword: str) -> list[str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return []
    element = metadata.get(f"{tag:08X}")
    if not isinstance(element, dict):
        return []
    out: list[str] = []
    for value in element.get("Value", []):
        if isinstance(value, dict):  # a person name (PS3.18 F.2.2): its alphabetic group
            out.append(str(value.get("Alphabetic", "")))
        elif not isinstance(value, list):
            out.append(str(value))
    return out


def matches(rule: Rule, candidate: Candidate) -> bool:
    """Whether every ``match`` entry of ``rule`` holds for ``candidate``."""
    metadata: dict[str, Any] | None = None
    for key, wanted in rule.match.items():
        patterns = [wanted] if isinstance(wanted, str) else wanted
        if key == CALLING_AE:
            values = [candidate.calling_ae.strip()]
        else:
            if metadata is None:
                metadata = json.loads(candidate.metadata_json)
            values = _values(metadata, key)
        if not any(fnmatch.fnmatchcase(v.strip().upper(), p.upper()) for v in values for p in patterns):
            return False
    return True
