"""The UI catalogue (viewer_api/i18n/messages.json): every key in English and Chinese with the same
fields, every key the templates, scripts and routes ask for exists, and none is left unused."""

from __future__ import annotations

import re
import string
from datetime import datetime
from pathlib import Path

import pytest

from ai_plugins.benchmarks.labels import Task
from ai_plugins.runner.registry import PluginSource
from pacs.accounts.audit import ACCESS_ACTIONS
from pacs.accounts.shares import ShareStatus
from pacs.reports.types import SECTION_TITLES
from viewer_api.i18n import CATALOGUE, LANGUAGES, Translator
from viewer_api.i18n.negotiate import from_accept_language, supported
from viewer_api.viewer.model import PRESETS

ROOT = Path(__file__).resolve().parents[3] / "viewer_api"
TEMPLATES = sorted((ROOT / "templates").glob("*.html"))
SCRIPTS = sorted((ROOT / "static").glob("*.js"))
PYTHON = sorted(p for p in ROOT.rglob("*.py") if "i18n" not in p.parts)

# Literal keys: t('k') / tn('k', …) in templates; T("k") / TN("k") / cloudfilm.t("k") in scripts;
# _message(request, 404, "k", "k") / .t("k") / .plural("k") / english("k") in Python.
TEMPLATE_KEY = re.compile(r"\btn?\('([a-z][\w.-]*)'")
SCRIPT_KEY = re.compile(r"\b(?:T|TN|cloudfilm\.t|cloudfilm\.tn|t)\(\"([a-z][\w.-]*)\"")
PYTHON_KEY = re.compile(r"(?:\.t|\.plural|english|_message\(request, \d+,)\(?\s*\"([a-z][\w.-]*\.[\w.-]+)\"")
PYTHON_SECOND = re.compile(r"_message\(request, \d+, \"[\w.-]+\", \"([\w.-]+)\"")
PYTHON_LITERAL = re.compile(r"\"((?:patient|link|msg|pin|login|claim)\.(?!html\")[\w.-]+)\"")
# Keys built at run time, from a prefix and the values it can take.
DYNAMIC = {
    "share.status.": [s.value for s in ShareStatus],
    "js.share.status.": [s.value for s in ShareStatus],
    "audit.action.": [str(getattr(a, "value", a)) for a in ACCESS_ACTIONS],  # the home page's "who opened"
    "report.section.": list(SECTION_TITLES),
    "js.report.section.": list(SECTION_TITLES),
    "js.preset.": sorted({p["name"] for presets in PRESETS.values() for p in presets}),
    "js.decided.": ["accepted", "rejected", "edited"],
    "js.tool.": [f"{t}{suffix}" for t in ("length", "angle", "ellipse", "freehand", "probe")
                 for suffix in ("", "_title")],
    # The AI admin pages (plugins.html, benchmarks.html, benchmark.html, evaluation.html).
    "plugins.source.": [s.value for s in PluginSource],
    "plugins.level.": ["finding", "study"],  # BenchmarkFigures.ppv_level
    "bench.task.": [t.value for t in Task],
    "eval.status.": ["running", "done", "failed"],  # EvaluationRow.status
    "eval.part.": ["classification", "study-level", "segmentation", "froc"],  # routes/benchmarks.py _detail_rows
}
PLURAL_BASES = {"common.images", "home.share_links", "home.views", "pin.wrong", "js.findings", "js.views",
                "claim.mismatch.text"}


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _used() -> set[str]:
    used: set[str] = set()
    for path in TEMPLATES:
        used |= set(TEMPLATE_KEY.findall(path.read_text(encoding="utf-8")))
    for path in SCRIPTS:
        used |= set(SCRIPT_KEY.findall(path.read_text(encoding="utf-8")))
    for path in PYTHON:
        source = path.read_text(encoding="utf-8")
        for pattern in (PYTHON_KEY, PYTHON_SECOND, PYTHON_LITERAL):
            used |= set(pattern.findall(source))
    used = {key for key in used if not key.endswith(".")}  # a prefix of the DYNAMIC keys
    used |= {prefix + value for prefix, values in DYNAMIC.items() for value in values}
    used = (used - PLURAL_BASES) | {f"{base}.{form}" for base in PLURAL_BASES for form in ("one", "other")}
    return used


def test_every_key_has_every_language_with_the_same_fields() -> None:
    assert CATALOGUE.missing() == []
    for key, texts in CATALOGUE.entries.items():
        assert set(texts) == set(LANGUAGES), key
        assert _fields(texts["en"]) == _fields(texts["zh-CN"]), key


def test_every_key_used_exists_and_every_key_is_used() -> None:
    used = _used()
    assert len(used) > 150  # the extraction found the templates' and scripts' keys
    assert sorted(used - CATALOGUE.keys()) == []
    assert sorted(CATALOGUE.keys() - used) == []


def test_plural_pairs_are_complete() -> None:
    for key in CATALOGUE.entries:
        if key.endswith((".one", ".other")):
            base = key.rsplit(".", 1)[0]
            assert {f"{base}.one", f"{base}.other"} <= CATALOGUE.keys(), key
            assert base in PLURAL_BASES, key


def test_the_chinese_texts_are_chinese() -> None:
    """A key whose zh-CN text is the English one is a forgotten translation (names and units aside)."""
    same = {k for k, v in CATALOGUE.entries.items() if v["en"] == v["zh-CN"]}
    assert same <= {"viewer.id", "viewer.pdf", "viewer.zip", "viewer.ohif", "js.preset.T1", "js.preset.T2",
                    "js.tool.ellipse"}, same


@pytest.mark.parametrize(("header", "lang"), [
    ("", "en"), ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"), ("zh-TW", "zh-CN"), ("zh-Hans-CN", "zh-CN"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"), ("fr-FR,zh;q=0.5,en;q=0.3", "zh-CN"), ("de, fr", "en"),
    ("en;q=0.2, zh-CN;q=0.9", "zh-CN"), ("zh-CN;q=0, en", "en"), ("*", "en"), ("zh;q=abc", "en"),
])  # fmt: skip
def test_accept_language(header: str, lang: str) -> None:
    assert from_accept_language(header) == lang


def test_supported_tags() -> None:
    assert supported("ZH_cn") == "zh-CN" and supported("en-GB") == "en" and supported("ja") is None


def test_dates_and_plurals_by_language() -> None:
    en, zh = Translator("en"), Translator("zh-CN")
    assert en.date("20240401") == "2024-04-01" and zh.date("20240401") == "2024年4月1日"
    assert en.date(datetime(2026, 12, 7, 5, 4)) == "2026-12-07" and zh.date("2024-11-30") == "2024年11月30日"
    assert en.date("2024") == "2024" and en.date(None) == ""
    assert zh.date_time(datetime(2026, 12, 7, 5, 4)) == "2026年12月7日 05:04"
    assert en.long_date(datetime(2026, 12, 7)) == "07 December 2026"
    assert en.plural("common.images", 1) == "1 image" and en.plural("common.images", 3) == "3 images"
    assert zh.plural("common.images", 3) == "3 张图像"
    with pytest.raises(KeyError):
        en.t("no.such.key")
