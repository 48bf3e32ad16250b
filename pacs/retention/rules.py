"""The ``[retention]`` table of the TOML config: storage tiers and the rules that use them.

```toml
[retention]
run_at = "02:00"                 # UTC time of day the nightly job is queued

[retention.tiers.cold]
url = "s3://archive-cold"        # another bucket (same endpoint and keys); omit to stay in the bucket
storage_class = "STANDARD_IA"    # x-amz-storage-class of the moved objects; omit to keep the default

[[retention.rules]]
name = "ct-cold-after-a-year"
action = "tier"                  # or "delete"
tier = "cold"
age_days = 365                   # the study is older than this ...
age_from = "study_date"          # ... counted from its StudyDate (or "received")
idle_days = 90                   # nobody opened it for this long (since it arrived if never)
modalities = ["CT", "MR"]        # one of its modalities is one of these
grace_days = 30                  # delete only: marked first, deleted once this has passed
```

Every condition a rule sets must hold; a rule sets at least one of ``age_days`` and ``idle_days``,
so no rule ever applies to every study. Rules are read in order and the first that matches a
study decides what happens to it. A condition is one :class:`Condition` in :data:`CONDITIONS`:
a further one is a rule field, a :class:`StudyFacts` field and one entry there. ``rejected = true``
picks studies an IHE IOCM rejection note withdrew entirely (every image rejected, :mod:`pacs.rejection`);
``rejected = false`` leaves them out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

Action = Literal["tier", "delete"]
AgeFrom = Literal["study_date", "received"]
_TIER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_RUN_AT = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class Tier(BaseModel):
    """Where a tier's objects live: ``url`` (``s3://bucket[/prefix]`` on the archive's S3 endpoint,
    or ``file:///path``; default the archive's own store) and the S3 ``storage_class`` they get."""

    url: str | None = None
    storage_class: str | None = Field(default=None, pattern=r"^[A-Z_]{1,32}$")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("file://", "s3://")):
            raise ValueError("must start with file:// or s3://")
        return value

    @model_validator(mode="after")
    def _check_useful(self) -> Tier:
        if self.url is None and self.storage_class is None:
            raise ValueError("a tier needs a url, a storage_class or both")
        if self.storage_class is not None and self.url is not None and self.url.startswith("file://"):
            raise ValueError("storage_class applies to S3 stores only")
        return self


class RetentionRule(BaseModel):
    """Which studies get which action."""

    name: str = Field(min_length=1, max_length=64)
    action: Action
    tier: str | None = None  # with action = "tier"
    age_days: int | None = Field(default=None, ge=0)
    age_from: AgeFrom = "study_date"
    idle_days: int | None = Field(default=None, ge=0)
    modalities: list[str] = Field(default_factory=list)
    grace_days: int = Field(default=30, ge=0)  # with action = "delete"
    rejected: bool | None = None  # true: only studies whose every image was rejected; false: never those
    partition: str = "default"  # the partition (its slug) whose studies the rule applies to

    @model_validator(mode="after")
    def _check(self) -> RetentionRule:
        if self.age_days is None and self.idle_days is None:
            raise ValueError(f"retention rule {self.name!r} needs age_days or idle_days")
        if self.action == "tier" and not self.tier:
            raise ValueError(f"retention rule {self.name!r} moves studies: it needs tier = the tier's name")
        if self.action == "delete" and self.tier:
            raise ValueError(f"retention rule {self.name!r} deletes studies: tier does not apply")
        self.modalities = [m.strip().upper() for m in self.modalities if m.strip()]
        return self


def check_retention(tiers: dict[str, Tier], rules: list[RetentionRule], run_at: str,
                    partitions: frozenset[str] = frozenset({"default"})) -> None:  # fmt: skip
    """``ValueError`` for a rule naming an unknown tier or partition, two rules of one name, a bad tier name
    or time."""
    if not _RUN_AT.match(run_at):
        raise ValueError(f"retention run_at {run_at!r} must be HH:MM (UTC)")
    for name in tiers:
        if not _TIER_NAME.match(name):
            raise ValueError(f"tier name {name!r} must be 1 to 32 lower-case letters, digits or '-'")
    names: set[str] = set()
    for rule in rules:
        if rule.name in names:
            raise ValueError(f"two retention rules are named {rule.name!r}")
        names.add(rule.name)
        if rule.tier is not None and rule.tier not in tiers:
            raise ValueError(f"retention rule {rule.name!r} names unknown tier {rule.tier!r}")
        if rule.partition not in partitions:
            raise ValueError(f"retention rule {rule.name!r} names unknown partition {rule.partition!r}")


def run_at_time(run_at: str) -> tuple[int, int]:
    """``"HH:MM"`` as (hour, minute)."""
    hour, minute = run_at.split(":")
    return int(hour), int(minute)


@dataclass(frozen=True, slots=True)
class StudyFacts:
    """What a rule looks at: one study's dates, when it was last opened, and its modalities."""

    study_uid: str
    study_date: str  # YYYYMMDD, or "" when the study has none
    received_at: datetime
    last_accessed_at: datetime | None
    modalities: frozenset[str]
    rejected: bool = False  # every image of the study was rejected by an IOCM rejection note

    def age_start(self, age_from: AgeFrom) -> datetime:
        """When the study's age counts from: its StudyDate (midnight UTC), else when it arrived."""
        if age_from == "study_date" and (day := _study_day(self.study_date)) is not None:
            return datetime(day.year, day.month, day.day, tzinfo=self.received_at.tzinfo)
        return self.received_at

    @property
    def idle_since(self) -> datetime:
        return self.last_accessed_at or self.received_at


def _study_day(value: str) -> date | None:
    try:
        return datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition a rule may set: ``applies`` (the rule sets it), ``holds`` (the study meets it)."""

    name: str
    applies: Callable[[RetentionRule], bool]
    holds: Callable[[RetentionRule, StudyFacts, datetime], bool]


CONDITIONS: tuple[Condition, ...] = (
    Condition("age", lambda r: r.age_days is not None,
              lambda r, f, now: f.age_start(r.age_from) <= now - timedelta(days=r.age_days or 0)),
    Condition("idle", lambda r: r.idle_days is not None,
              lambda r, f, now: f.idle_since <= now - timedelta(days=r.idle_days or 0)),
    Condition("modality", lambda r: bool(r.modalities),
              lambda r, f, now: not f.modalities.isdisjoint(r.modalities)),
    Condition("rejected", lambda r: r.rejected is not None, lambda r, f, now: f.rejected == r.rejected),
)  # fmt: skip


def matches(rule: RetentionRule, facts: StudyFacts, now: datetime) -> bool:
    """Whether every condition ``rule`` sets holds for the study."""
    return all(c.holds(rule, facts, now) for c in CONDITIONS if c.applies(rule))


def first_match(rules: list[RetentionRule], facts: StudyFacts, now: datetime) -> RetentionRule | None:
    """The rule that decides the study's fate: the first in config order that matches it."""
    return next((r for r in rules if matches(r, facts, now)), None)
