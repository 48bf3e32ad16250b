"""Web security: DICOM text is escaped, strict headers everywhere, no secrets in logs."""

from __future__ import annotations

import json
import logging
import re

import pytest

from tests.viewer_api.portal.conftest import PASSWORD, XSS_NAME, Site


def test_patient_name_with_markup_is_text_in_the_worklist(site: Site) -> None:
    page = site.client("admin").get("/viewer/worklist", params={"name": "script"})
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_patient_name_with_markup_is_text_in_the_viewer(site: Site) -> None:
    uid = str(site.xss[0].StudyInstanceUID)
    page = site.client("admin").get(f"/viewer/studies/{uid}")
    assert page.status_code == 200
    assert "<script>alert(1)" not in page.text and "<img src=x" not in page.text
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert all('src="/static/' in s or 'type="application/json"' in s for s in scripts), scripts
    embedded = re.search(r'<script type="application/json" id="study-data">(.*?)</script>', page.text, re.S)
    assert embedded is not None
    model = json.loads(embedded.group(1))
    assert model["study"]["patient_name"] == XSS_NAME  # intact as data, inert as markup


@pytest.mark.parametrize("path", ["/login", "/viewer/worklist", "/dicomweb/studies", "/api/auth/me", "/healthz"])
def test_security_headers(site: Site, path: str) -> None:
    response = site.client("admin").get(path)
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "noindex" in response.headers["x-robots-tag"]


def test_robots_txt_disallows_everything(site: Site) -> None:
    assert site.new_client().get("/robots.txt").text == "User-agent: *\nDisallow: /\n"


def test_static_files_are_cacheable_when_versioned(site: Site) -> None:
    page = site.client("admin").get("/viewer/worklist").text
    css = re.search(r'href="(/static/app\.css\?v=[0-9a-f]+)"', page)
    assert css is not None
    response = site.new_client().get(css.group(1))
    assert response.status_code == 200 and "immutable" in response.headers["cache-control"]


def test_no_secrets_in_logs(fresh_site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = fresh_site.new_client()
    token = c.post("/api/auth/token", data={"username": "doc", "password": PASSWORD}).json()["access_token"]
    c.post("/api/auth/token", data={"username": "doc", "password": "wrong-password-123"})
    share = c.post(f"/api/studies/{fresh_site.owned_uid}/shares", json={"pin": "97531"},
                   headers={"Authorization": f"Bearer {token}"}).json()
    visitor = fresh_site.new_client()
    path = "/s/" + share["url"].rsplit("/s/", 1)[1]
    visitor.post(path, data={"pin": "11111"})
    visitor.post(path, data={"pin": "97531"})
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]  # not the test client
    logged = " ".join(f"{r.getMessage()} {r.exc_text or ''}" for r in server_side)
    for secret in (PASSWORD, "wrong-password-123", token, path.rsplit("/", 1)[1], "97531", "11111"):
        assert secret not in logged
    audit = fresh_site.client("admin").get("/api/audit").text
    for secret in (PASSWORD, "wrong-password-123", token, path.rsplit("/", 1)[1], "97531", "11111"):
        assert secret not in audit
