"""The pages' language over HTTP: English by default, Chinese from ``Accept-Language``, ``?lang=``
kept in a cookie that then outranks the header; share-link, PIN and sign-in messages follow it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from pacs.accounts.shares import create_share, revoke_share
from tests.viewer_api.portal.conftest import Site

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}


def _share(site: Site, **options: object) -> tuple[int, str]:
    share = create_share(site.archive.engine, site.app.state.authenticator.key, site.owned_uid, created_by=None,
                         expires_in_days=7, max_days=365, **options)  # type: ignore[arg-type]
    return share.id, f"/s/{share.token}"


def _share_path(site: Site, **options: object) -> str:
    return _share(site, **options)[1]


def test_pin_page_follows_the_browser(site: Site) -> None:
    path = _share_path(site, pin="2580")
    english = site.new_client().get(path)
    assert english.status_code == 200 and '<html lang="en">' in english.text
    assert "This study is protected" in english.text and english.headers["content-language"] == "en"
    chinese = site.new_client().get(path, headers=ZH)
    assert '<html lang="zh-CN">' in chinese.text and chinese.headers["content-language"] == "zh-CN"
    assert "此检查受 PIN 码保护" in chinese.text and "This study is protected" not in chinese.text
    assert 'hreflang="en"' in chinese.text  # the switch back to English
    wrong = site.new_client().post(path, data={"pin": "1111"}, headers=ZH)
    assert wrong.status_code == 401 and "PIN 码错误。还可尝试" in wrong.text


def test_lang_parameter_is_kept_in_a_cookie(site: Site) -> None:
    client = site.new_client()
    chosen = client.get("/login?lang=zh-CN", headers={"Accept-Language": "en"})
    assert "登录" in chosen.text and "Sign in</h1>" not in chosen.text
    cookie = chosen.headers["set-cookie"]
    assert cookie.startswith("cloudfilm_lang=zh-CN") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    again = client.get("/login", headers={"Accept-Language": "en"})  # the cookie outranks the header
    assert "登录" in again.text and "set-cookie" not in again.headers
    back = client.get("/login?lang=en", headers=ZH)
    assert "Sign in</h1>" in back.text and client.get("/login", headers=ZH).text.count("登录") == 0
    ignored = site.new_client().get("/login?lang=xx")
    assert "Sign in</h1>" in ignored.text and "set-cookie" not in ignored.headers


def test_revoked_and_expired_links_in_chinese(site: Site) -> None:
    revoked_id, revoked = _share(site)
    revoke_share(site.archive.engine, site.owned_uid, revoked_id)
    expired_id, expired = _share(site)
    with site.archive.engine.begin() as conn:
        conn.execute(text("UPDATE shares SET expires_at = :t WHERE id = :id"),
                     {"t": datetime(2020, 1, 2, tzinfo=UTC), "id": expired_id})
    page = site.new_client().get(revoked, headers=ZH)
    assert page.status_code == 410 and "链接已撤销" in page.text
    page = site.new_client().get(expired, headers=ZH)
    assert page.status_code == 410 and "此链接已于 2020年1月2日 过期" in page.text
    page = site.new_client().get(expired)
    assert "This link expired on 02 January 2020" in page.text
    assert "链接无效" in site.new_client().get("/s/nosuchtoken000000000000000", headers=ZH).text


def test_wrong_password_in_chinese(site: Site) -> None:
    client = site.new_client()
    form = client.get("/login", headers=ZH).text
    csrf = form.split('name="csrf_token" value="')[1].split('"')[0] if 'name="csrf_token"' in form else ""
    answer = client.post("/login", data={"username": "admin", "password": "nope", "csrf_token": csrf,
                                         "next": "/viewer/"}, headers=ZH)  # fmt: skip
    assert answer.status_code == 401 and "用户名或密码错误。" in answer.text


def test_worklist_in_chinese(site: Site) -> None:
    page = site.client("admin").get("/viewer/worklist?name=", headers=ZH)
    assert page.status_code == 200 and '<html lang="zh-CN">' in page.text
    for wanted in ("搜索", "患者姓名", "全部设备类型", "张图像", "年"):
        assert wanted in page.text, wanted
    for english in (">Search<", 'placeholder="Patient name"', "Any modality", " images<"):
        assert english not in page.text, english


def test_worklist_search_error_in_chinese(site: Site) -> None:
    """A search the archive refuses says so in the page's language; the archive's own reason follows,
    marked as English (``lang="en"``) for screen readers."""
    page = site.client("admin").get("/viewer/worklist?date_from=2024-13-45", headers=ZH)
    assert page.status_code == 200 and 'role="alert"' in page.text, page.text[-2000:]
    assert "无法使用这些检索条件。" in page.text and "These search terms cannot be used." not in page.text
    english = site.client("admin").get("/viewer/worklist?date_from=2024-13-45", headers={"Accept-Language": "en"})
    assert "These search terms cannot be used." in english.text
