"""Languages and keyboard access in headless Chromium (issue 14, item 5).

Debian ``chromium`` driven by Playwright. A browser asking for Chinese (``Accept-Language: zh-CN``)
gets the patient's pages and the viewer in Chinese, with none of the English texts of the main UI
left; one asking for nothing in particular gets English. Keyboard only: Tab reaches a tool, Enter and
Space work it, arrow keys change the slice (announced in a polite live region), and the share
dialog opens from the keyboard, keeps Tab inside, closes on Esc and gives focus back to its button.
Every button, link, field and list box on the pages has an accessible name (a small axe-like check).
The staff's AI pages (plugins, benchmarks, leaderboard, evaluation report) get the same checks in Chinese,
laid out at 1366×800 without sideways scrolling. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from sqlalchemy import select, update

from ai_plugins.benchmarks.models import BenchmarkRow, BenchmarkVersionRow, EvaluationRow
from ai_plugins.runner.models import PluginRecord
from tests.ai_plugins.benchmarks.test_gate_watch import _evaluation, _plugin, _reviews
from tests.viewer_api.portal import test_browser
from tests.viewer_api.portal.conftest import PASSWORD, Server
from tests.viewer_api.portal.test_browser import ARTIFACTS, PHONE, _image_loaded, _new_share, _watch
from tests.viewer_api.portal.test_viewer_tools import _drag, _last, _tool
from viewer_api.i18n import CATALOGUE

browser = test_browser.browser  # the module-scoped Chromium of the other browser tests
DESK = {"viewport": {"width": 1366, "height": 800}}
ZH_TEXTS = CATALOGUE.texts("zh-CN")
EN_TEXTS = CATALOGUE.texts("en")

# Elements of the patient's viewer and the catalogue key of the text each must show.
VIEWER_TEXTS = [
    ("#fit", "viewer.fit"), ("#tools-toggle", "viewer.all_tools"), ("#film", "viewer.film"),
    ("#share", "viewer.share"), ("#panel-bar .panel-title", "viewer.report_and_findings_bar"),
    ("#report-status", "patient.report_not_ready"), ("#film-note", "patient.note"),
    ("#report h2", "viewer.report"), ("#preset option[value='']", "js.default_window"),
    ("#info-toggle", "js.info"), ("#invert", "js.invert"), ("button[data-mode=scroll]", "viewer.scroll"),
    ("button[data-mode=pan]", "viewer.pan"), ("button[data-mode=length]", "js.tool.length"),
    ("#measure-clear", "js.clear"), ("a.navlink[href='/viewer/home']", "nav.my_studies"),
    ("form[action='/logout'] button", "nav.sign_out"), ("#sync", "js.layout.sync"), ("#compare", "js.layout.prior"),
    ("#layers legend", "js.overlays"), ("button[data-mode=angle]", "js.tool.angle"),
]
# Script-made controls named by aria-label / title, and the catalogue key of that name.
VIEWER_NAMES = [
    (".layouts", "aria-label", "js.layout.group"), (".measure-tools", "aria-label", "js.measure"),
    ("#sync", "title", "js.layout.sync_title"), ("button[data-layout='1x2']", "title", "js.layout.title"),
]
# Keys whose English text must not appear anywhere on the Chinese pages (names and units aside).
NOT_IN_CHINESE = [
    "viewer.fit", "viewer.all_tools", "viewer.share", "viewer.film", "viewer.report_and_findings_bar",
    "patient.report_not_ready", "patient.note", "viewer.scroll", "viewer.pan", "viewer.reset",
    "js.default_window", "js.info", "js.invert", "js.clear", "js.tool.length", "js.tool.angle", "js.tool.probe",
    "nav.my_studies", "nav.sign_out", "viewer.exam", "viewer.valid_until", "viewer.shared_by", "js.auto_window",
    "home.opened", "home.share_links.other", "wl.search", "login.title", "pin.heading", "pin.text", "pin.open",
    "js.layout.sync", "js.layout.prior", "js.layout.group", "js.layout.prior_title", "js.layout.sync_title",
    "js.measure", "js.tool.freehand", "js.tool.angle_title",
]
# The AI admin pages: every text of their catalogue sections (and the navigation).
ADMIN_KEYS = sorted(k for k in EN_TEXTS if k.startswith(("admin.", "plugins.", "bench.", "eval.", "nav.")))
NAMELESS = (Path(__file__).with_name("accessible_names.js")).read_text(encoding="utf-8")


def _context(browser: Browser, lang: str | None, **options: object) -> BrowserContext:
    headers = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"} if lang == "zh-CN" else {}
    return browser.new_context(locale=lang or "en-US", extra_http_headers=headers, **options)  # type: ignore[arg-type]


@pytest.fixture
def zh_phone(browser: Browser) -> Iterator[BrowserContext]:
    context = _context(browser, "zh-CN", **PHONE)
    yield context
    context.close()


@pytest.fixture
def zh_desk(browser: Browser) -> Iterator[BrowserContext]:
    context = _context(browser, "zh-CN", **DESK)
    yield context
    context.close()


@pytest.fixture
def en_desk(browser: Browser) -> Iterator[BrowserContext]:
    context = _context(browser, None, **DESK)
    yield context
    context.close()


def _sign_in(context: BrowserContext, server: Server, path: str, username: str) -> tuple[Page, list[str]]:
    page = context.new_page()
    problems = _watch(page)
    page.goto(f"{server.url}/login?next={path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")
    if path.startswith("/viewer/studies/"):
        _image_loaded(page)
        page.wait_for_selector("#info-toggle, #invert", state="attached")
    return page, problems


def _body_text(page: Page) -> str:
    return page.evaluate("() => document.body.innerText + ' ' + Array.from(document.querySelectorAll("
                         "'[title],[aria-label],[placeholder],img[alt]')).map(e => [e.title,"
                         " e.getAttribute('aria-label'), e.getAttribute('placeholder'), e.getAttribute('alt')]"
                         ".join(' ')).join(' ')")


def _no_english(page: Page, keys: list[str]) -> list[str]:
    """The keys of ``keys`` whose English text is on ``page`` (fields such as ``{date}`` cut off)."""
    body = _body_text(page)
    left = []
    for key in keys:
        english = EN_TEXTS[key].split("{")[0].strip()
        whole = re.search(r"(?<!\w)" + re.escape(english) + r"(?!\w)", body)  # "Exam", not "Example"
        if len(english) >= 3 and english != ZH_TEXTS[key].split("{")[0].strip() and whole:
            left.append(key)
    return left


def _check_names(page: Page, texts: dict[str, str]) -> None:
    for selector, attribute, key in VIEWER_NAMES:
        expected = texts[key].format(layout="1×2")
        assert page.get_attribute(selector, attribute) == expected, selector


def _show_all_tools(page: Page) -> None:
    if page.get_attribute("#tools-toggle", "aria-pressed") == "false":
        page.click("#tools-toggle")


def test_patient_pages_in_chinese(live_site: Server, zh_phone: BrowserContext, zh_desk: BrowserContext) -> None:
    page, problems = _sign_in(zh_desk, live_site, "/viewer/home", "pat")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert page.locator("h1").inner_text() == ZH_TEXTS["nav.my_studies"]
    assert _no_english(page, NOT_IN_CHINESE) == []
    page.screenshot(path=str(ARTIFACTS / "zh-desk-patient-home.png"), full_page=True)
    assert page.evaluate(NAMELESS) == []

    page.goto(f"{live_site.url}/viewer/studies/{live_site.site.owned_uid}")
    _image_loaded(page)
    page.wait_for_selector("#info-toggle", state="attached")
    _show_all_tools(page)
    for selector, key in VIEWER_TEXTS:
        assert page.locator(selector).first.text_content().strip() == ZH_TEXTS[key], selector  # type: ignore[union-attr]
    _check_names(page, ZH_TEXTS)
    assert page.get_attribute("#cine", "aria-label") == ZH_TEXTS["viewer.play"]
    assert _no_english(page, NOT_IN_CHINESE) == []
    assert page.evaluate(NAMELESS) == []
    page.screenshot(path=str(ARTIFACTS / "zh-desk-patient-viewer.png"))
    # The texts on the image: the patient corner's date and series, slice position and thickness.
    assert "年" in page.locator("#patient-corner .pc-date").inner_text()
    assert page.locator("#patient-corner .pc-series").inner_text().startswith("序列 ")
    page.wait_for_function("() => document.getElementById('position-label').textContent.includes('层厚 ')")
    assert not re.search(r"\bLoc\b|\bTh\b", page.locator("#position-label").inner_text())
    # A measurement's text on the image is Chinese too (the numbers and units as they are).
    _tool(page, "ellipse")
    _drag(page, [(8, 8), (24, 24)])
    roi = _last(page, "ellipse")["text"]
    assert roi.startswith("面积 ") and "mm²" in roi, roi
    assert ZH_TEXTS["js.measure.stats_wait"] in roi or ("均值 " in roi and "标准差 " in roi and "最大 " in roi), roi
    assert not re.search(r"Area|Mean|statistics", roi), roi
    assert not problems, problems

    phone_page, phone_problems = _sign_in(zh_phone, live_site, f"/viewer/studies/{live_site.site.owned_uid}", "pat")
    assert phone_page.locator("#panel-sum").inner_text() == ZH_TEXTS["patient.report_not_ready"]
    phone_page.screenshot(path=str(ARTIFACTS / "zh-phone-patient-viewer.png"))
    overflow = phone_page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px"
    assert not phone_problems, phone_problems


def test_share_link_and_pin_in_chinese(live_site: Server, zh_phone: BrowserContext) -> None:
    page = zh_phone.new_page()
    problems = _watch(page)
    page.goto(_new_share(live_site, pin="2580"))
    assert page.locator("h1").inner_text() == ZH_TEXTS["pin.heading"]
    assert _no_english(page, NOT_IN_CHINESE) == []
    assert page.evaluate(NAMELESS) == []
    page.screenshot(path=str(ARTIFACTS / "zh-phone-share-pin.png"))
    page.fill("#pin", "2580")
    page.click("button[type=submit]")
    _image_loaded(page)
    assert page.locator("#film-note").inner_text() == ZH_TEXTS["patient.note"]
    assert page.locator("#expires").inner_text().startswith("链接有效期至 ")
    assert "年" in page.locator("#exam-date").inner_text()
    assert _no_english(page, NOT_IN_CHINESE) == []
    page.screenshot(path=str(ARTIFACTS / "zh-phone-share-viewer.png"))
    # The language switch: English for this browser from now on (a cookie), whatever it asks for.
    page.click("a.lang[hreflang=en]")
    _image_loaded(page)
    assert page.locator("#film-note").inner_text() == EN_TEXTS["patient.note"]
    page.reload()
    _image_loaded(page)
    assert page.evaluate("document.documentElement.lang") == "en"
    assert not problems, problems


def test_english_by_default(live_site: Server, en_desk: BrowserContext) -> None:
    page, problems = _sign_in(en_desk, live_site, f"/viewer/studies/{live_site.site.owned_uid}", "pat")
    _show_all_tools(page)
    assert page.evaluate("document.documentElement.lang") == "en"
    for selector, key in VIEWER_TEXTS:
        assert page.locator(selector).first.text_content().strip() == EN_TEXTS[key], selector  # type: ignore[union-attr]
    _check_names(page, EN_TEXTS)
    assert not problems, problems


def _tab_to(page: Page, selector: str, limit: int = 80) -> int:
    """Press Tab until ``selector`` has focus; the number of presses."""
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            return presses
    raise AssertionError(f"Tab never reached {selector}")


def _index(page: Page) -> int:
    return int(page.locator("#viewport").get_attribute("data-index") or "-1")


def test_keyboard_only(live_site: Server, en_desk: BrowserContext) -> None:
    page, problems = _sign_in(en_desk, live_site, f"/viewer/studies/{live_site.site.owned_uid}", "doc")
    page.locator("body").focus()
    page.evaluate("document.activeElement.blur()")

    _tab_to(page, "#zoom-in")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"  # visible focus
    page.screenshot(path=str(ARTIFACTS / "desk-keyboard-focus-zoom.png"))
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('zoom-label').textContent === '1.3×'")
    page.keyboard.press("-")
    page.wait_for_function("() => document.getElementById('zoom-label').textContent === ''")

    _tab_to(page, "button[data-mode=window]")
    page.keyboard.press("Space")
    assert page.get_attribute("button[data-mode=window]", "aria-pressed") == "true"
    before = page.locator("#viewport").get_attribute("data-window")
    page.keyboard.press("Shift+ArrowRight")  # wider window
    page.wait_for_function("(w) => document.getElementById('viewport').dataset.window !== w", arg=before)

    start = _index(page)
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.index === '{start + 1}'")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.index === '{start - 1}'")
    total = page.evaluate("window.cloudfilmViewer.state.slices.length")
    page.wait_for_function("(t) => document.getElementById('slice-live').textContent === t",
                           arg=EN_TEXTS["js.slice_of"].format(index=start, total=total))
    assert page.get_attribute("#slice-live", "aria-live") == "polite"

    _tab_to(page, "#share")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('share-dialog').open")
    assert page.evaluate("document.getElementById('share-dialog').contains(document.activeElement)")
    for _ in range(25):  # Tab stays inside the modal dialog
        page.keyboard.press("Tab")
        inside = page.evaluate("document.getElementById('share-dialog').contains(document.activeElement)"
                               " || document.activeElement === document.body")
        assert inside, page.evaluate("document.activeElement.outerHTML.slice(0, 80)")
    assert page.evaluate(NAMELESS) == []
    page.screenshot(path=str(ARTIFACTS / "desk-keyboard-share-dialog.png"))
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.getElementById('share-dialog').open")
    assert page.evaluate("document.activeElement.id") == "share"
    start = _index(page)
    page.keyboard.press("ArrowDown")  # the viewer's keys work again once the dialog is closed
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.index === '{start + 1}'")
    assert not problems, problems


def test_every_control_has_an_accessible_name(live_site: Server, en_desk: BrowserContext) -> None:
    page, problems = _sign_in(en_desk, live_site, "/viewer/worklist?name=", "admin")
    assert page.evaluate(NAMELESS) == []
    page.goto(f"{live_site.url}/viewer/studies/{live_site.site.owned_uid}")
    _image_loaded(page)
    page.wait_for_selector("#info-toggle", state="attached")
    _show_all_tools(page)
    assert page.evaluate(NAMELESS) == []
    # The check finds a nameless icon button (so it can fail).
    page.evaluate("() => { const b = document.createElement('button'); b.textContent = '\\u25B6';"
                  " b.firstChild && b.replaceChildren(Object.assign(document.createElement('span'),"
                  " {textContent: '\\u25B6'})); b.firstChild.setAttribute('aria-hidden', 'true');"
                  " document.querySelector('.toolbar').appendChild(b); }")
    assert len(page.evaluate(NAMELESS)) == 1
    assert not problems, problems


def _seed_ai_pages(server: Server) -> tuple[int, int]:
    """An enabled plugin in alert, one with too few reviews to judge, one not in use; a benchmark with a
    finished evaluation (the rows the scorer and the review service leave). (benchmark id, evaluation id)."""
    archive = server.site.archive
    _plugin(archive, "acme-detector", "2.0", digest="a" * 64)
    _plugin(archive, "beta-detector", "1.0")
    _plugin(archive, "gamma-detector", "0.9")
    evaluation = _evaluation(archive, "acme-detector", "2.0", auc=0.95, tp=45, called=50, digest="a" * 64)
    _evaluation(archive, "beta-detector", "1.0", auc=0.91, tp=40, called=50)
    _evaluation(archive, "gamma-detector", "0.9", auc=0.5, tp=1, called=2, status="running")
    with archive.engine.begin() as conn:
        conn.execute(update(PluginRecord).where(PluginRecord.name.in_(["acme-detector", "beta-detector"]))
                     .values(enabled=True))  # fmt: skip
        row = conn.execute(select(EvaluationRow.metrics_json).where(EvaluationRow.id == evaluation)).scalar_one()
        none = {"ci_low": None, "ci_high": None}
        froc = {"sensitivity_at_fp_per_scan": {"0.5": {"value": 0.7, **none}, "1": {"value": 0.8, **none}},
                "mean_sensitivity": {"value": 0.75, "ci_low": 0.7, "ci_high": 0.8}}
        metrics = {**json.loads(row), "froc": froc}
        conn.execute(update(EvaluationRow).where(EvaluationRow.id == evaluation)
                     .values(metrics_json=json.dumps(metrics)))  # fmt: skip
        bench_id = conn.execute(select(BenchmarkRow.id).where(BenchmarkRow.name == "lesions")).scalar_one()
        conn.execute(update(BenchmarkVersionRow).where(BenchmarkVersionRow.benchmark_fk == bench_id).values(
            change="split (seed 5, test fraction 0.5)", n_cases=80, n_labelled=80, n_dev=40, n_test=40))  # fmt: skip
    _reviews(archive, "acme-detector", "2.0", {"accepted": 2, "edited": 1, "rejected": 20})  # 13 % < 79 %
    _reviews(archive, "beta-detector", "1.0", {"accepted": 3}, days_ago=2)  # its own review UIDs
    return bench_id, evaluation


def test_ai_admin_pages_in_chinese(live_site: Server, zh_desk: BrowserContext, en_desk: BrowserContext,
                                   zh_phone: BrowserContext) -> None:  # fmt: skip
    """The staff's AI pages in Chinese: none of their English texts left, every control named, Tab reaches
    the links with a visible focus ring, and the layout holds (no sideways scrolling at 1366×800, nor at
    375 px, where the wide tables scroll inside their own labelled region)."""
    bench_id, evaluation = _seed_ai_pages(live_site)
    pages = {"plugins": "/viewer/plugins", "benchmarks": "/viewer/benchmarks",
             "leaderboard": f"/viewer/benchmarks/{bench_id}",
             "evaluation": f"/viewer/benchmarks/evaluations/{evaluation}", "worklist": "/viewer/worklist?name="}
    page, problems = _sign_in(zh_desk, live_site, "/viewer/worklist?name=", "admin")
    for name, path in pages.items():
        page.goto(f"{live_site.url}{path}")
        assert page.evaluate("document.documentElement.lang") == "zh-CN", name
        assert _no_english(page, ADMIN_KEYS) == [], name
        assert page.evaluate(NAMELESS) == [], name
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} scrolls sideways by {overflow} px"
        page.screenshot(path=str(ARTIFACTS / f"zh-desk-admin-{name}.png"), full_page=True)
        if name == "plugins":
            alert = page.locator("tr[data-plugin='acme-detector@2.0']")
            assert alert.get_attribute("data-alert") == "1"
            assert ZH_TEXTS["plugins.below"] in alert.inner_text() and "医生接受了 13.0%" in alert.inner_text()
            assert "触发警报至少需要 20 项" in page.locator("tr[data-plugin='beta-detector@1.0']").inner_text()
            assert page.locator("tr[data-plugin='gamma-detector@0.9']").inner_text().strip().endswith(
                ZH_TEXTS["plugins.not_in_use"])  # fmt: skip
            page.locator("body").focus()
            _tab_to(page, "a[href^='/viewer/benchmarks/evaluations/']")  # the keyboard reaches the table's links
            assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
        if name == "leaderboard":
            assert "划分数据集（随机种子 5，测试集比例 0.5）" in page.locator("main").inner_text()
        if name == "evaluation":
            assert page.locator("#status").inner_text() == ZH_TEXTS["eval.status.done"]
            metrics = page.locator("#metrics").inner_text()
            assert "每次扫描 0.5 个假阳性时的灵敏度" in metrics and ZH_TEXTS["eval.froc_mean"] in metrics
            assert page.locator("h1").inner_text() == "acme-detector@2.0 在 lesions 上的评估"
    assert not problems, problems

    phone, phone_problems = _sign_in(zh_phone, live_site, "/viewer/plugins", "admin")
    for name in ("plugins", "leaderboard"):
        phone.goto(f"{live_site.url}{pages[name]}")
        overflow = phone.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} scrolls sideways by {overflow} px on a phone"
        assert phone.evaluate(NAMELESS) == [], name
        phone.screenshot(path=str(ARTIFACTS / f"zh-phone-admin-{name}.png"))
    assert not phone_problems, phone_problems

    # The same check finds the English texts on the English pages (so it can fail).
    english, _ = _sign_in(en_desk, live_site, "/viewer/plugins", "admin")
    found = _no_english(english, ADMIN_KEYS)
    assert {"admin.col.plugin", "plugins.not_in_use", "plugins.below", "nav.plugins"} <= set(found), found
    english.goto(f"{live_site.url}/viewer/benchmarks/evaluations/{evaluation}")
    assert english.locator("h1").inner_text() == "acme-detector@2.0 on lesions"
    assert english.locator("#status").inner_text() == "done"
    assert "sensitivity at 0.5 FP/scan" in english.locator("#metrics").inner_text()
    english.goto(f"{live_site.url}/viewer/benchmarks/{bench_id}")
    assert "split (seed 5, test fraction 0.5)" in english.locator("main").inner_text()
