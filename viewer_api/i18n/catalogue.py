"""The message catalogue: ``messages.json`` maps each key to its text in every language.

Texts are ``str.format`` templates with named fields (``{count}``); a key ending in ``.one`` /
``.other`` is a plural pair chosen by :meth:`Translator.plural`. The scripts get the same texts for
the page's language: ``base.html`` embeds the ``js.`` keys and ``common.js`` reads them as ``cloudfilm.t``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LANGUAGES: tuple[str, ...] = ("en", "zh-CN")
DEFAULT = "en"
SCRIPT_PREFIX = "js."  # the keys the scripts use; only these are embedded in a page
LANGUAGE_NAMES = {"en": "English", "zh-CN": "中文"}


class Catalogue:
    """Every UI text by key and language, as loaded from ``messages.json``."""

    def __init__(self, entries: dict[str, dict[str, str]]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, path: Path) -> Catalogue:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def keys(self) -> set[str]:
        return set(self.entries)

    def missing(self) -> list[tuple[str, str]]:
        """(key, language) pairs without a non-empty text."""
        return [(k, lang) for k, texts in sorted(self.entries.items()) for lang in LANGUAGES
                if not str(texts.get(lang, "")).strip()]  # fmt: skip

    def texts(self, lang: str, prefix: str = "") -> dict[str, str]:
        """The text in ``lang`` of every key starting with ``prefix``."""
        return {k: v.get(lang) or v[DEFAULT] for k, v in self.entries.items() if k.startswith(prefix)}

    def text(self, lang: str, key: str) -> str:
        texts = self.entries.get(key)
        if texts is None:
            raise KeyError(f"no UI text {key!r} in the catalogue")
        return texts.get(lang) or texts[DEFAULT]


CATALOGUE = Catalogue.load(Path(__file__).with_name("messages.json"))


def english(key: str, **fields: Any) -> str:
    """The English text of ``key`` (where a module needs a constant, e.g. the patient's note)."""
    return CATALOGUE.text(DEFAULT, key).format(**fields)


@dataclass(frozen=True, slots=True)
class Translator:
    """The catalogue in one language, as the templates use it (``t``, ``tn``, ``date``)."""

    lang: str
    catalogue: Catalogue = CATALOGUE

    def t(self, key: str, **fields: Any) -> str:
        return self.catalogue.text(self.lang, key).format(**fields)

    def plural(self, key: str, count: int, **fields: Any) -> str:
        return self.t(f"{key}.{'one' if count == 1 else 'other'}", count=count, **fields)

    def date(self, value: dt.date | str | None) -> str:
        """A calendar date the way this language writes it: 2024-04-01 / 2024年4月1日.

        Takes a date, a datetime or a DICOM DA string (``YYYYMMDD``); anything else is returned as is.
        """
        if value is None or value == "":
            return ""
        if isinstance(value, str):
            digits = value.replace("-", "")
            if len(digits) != 8 or not digits.isdigit():
                return value
            y, m, d = int(digits[:4]), int(digits[4:6]), int(digits[6:])
        else:
            y, m, d = value.year, value.month, value.day
        if self.lang == "zh-CN":
            return f"{y}年{m}月{d}日"
        return f"{y:04d}-{m:02d}-{d:02d}"

    def date_time(self, value: dt.datetime | None) -> str:
        if value is None:
            return ""
        return f"{self.date(value)} {value:%H:%M}"

    def long_date(self, value: dt.date) -> str:
        """A date in words (``01 April 2024`` / ``2024年4月1日``), for sentences."""
        if self.lang == "zh-CN":
            return self.date(value)
        return f"{value:%d %B %Y}"
