"""The plugin contract: metadata, an input filter, and ``run(study) -> Findings``.

In-process plugins subclass :class:`Plugin` and are found through the entry-point group
``cloudfilm.plugins`` (``name = "package.module:Class"``); the registry instantiates them with
no arguments. Vendor-hosted plugins describe themselves with the same :class:`PluginInfo`.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ai_plugins.sdk.findings import Findings
from ai_plugins.sdk.study import StudyInput
from ai_plugins.sdk.summary import InputFilter, StudySummary

__all__ = ["ENTRY_POINT_GROUP", "Plugin", "PluginInfo"]

ENTRY_POINT_GROUP = "cloudfilm.plugins"
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class PluginInfo(BaseModel):
    """Who a plugin is and what it wants to see."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="lower-case slug, unique per vendor")
    version: str = Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")
    vendor: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=1024)
    intended_use: str = Field(default="", max_length=2048)
    input_filter: InputFilter = Field(default_factory=InputFilter)
    # Set by the archive for an algorithm package (never by the plugin): the SHA-256 of the admitted
    # package file, written into every SR/SEG as an algorithm parameter.
    package_digest: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")

    @property
    def key(self) -> str:
        """``name@version``, as the SR/SEG series descriptions and job records name it."""
        return f"{self.name}@{self.version}"


class Plugin(abc.ABC):
    """Base class of in-process plugins; set the class attributes and implement :meth:`run`.

    ``run`` gets a :class:`StudyInput` whose series load lazily, and returns :class:`Findings`.
    It must not keep state between studies, touch the archive, or use the network.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    vendor: ClassVar[str]
    description: ClassVar[str] = ""
    intended_use: ClassVar[str] = ""
    input_filter: ClassVar[InputFilter] = InputFilter()

    def __init__(self) -> None:
        self.info()  # fail early on missing or malformed metadata

    @classmethod
    def info(cls) -> PluginInfo:
        """The metadata as one validated object (raises ``ValueError`` when incomplete)."""
        missing = [attr for attr in ("name", "version", "vendor") if not hasattr(cls, attr)]
        if missing:
            raise ValueError(f"plugin {cls.__qualname__} does not set {', '.join(missing)}")
        return PluginInfo(
            name=cls.name,
            version=cls.version,
            vendor=cls.vendor,
            description=cls.description,
            intended_use=cls.intended_use,
            input_filter=cls.input_filter,
        )

    def accepts(self, summary: StudySummary) -> bool:
        """Whether the router should run this plugin on the study."""
        return self.input_filter.matches(summary)

    @abc.abstractmethod
    def run(self, study: StudyInput) -> Findings:
        """Analyse one study and report."""
