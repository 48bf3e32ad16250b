"""Share links over HTTP: create/list/revoke, QR codes, PIN and lockout, expiry, downloads, claiming."""

from __future__ import annotations

import io
from datetime import timedelta

from PIL import Image
from sqlalchemy import text

from pacs.index.db import utcnow
from tests.viewer_api.portal.conftest import OWNER, PASSWORD, Site, csrf_of, frame_url, login


def _create(site: Site, kind: str = "admin", study: str | None = None, **body: object) -> dict[str, object]:
    url = f"/api/studies/{study or site.owned_uid}/shares"
    response = site.client(kind).post(url, json=body, headers=site.headers(kind))
    assert response.status_code == 201, response.text
    result: dict[str, object] = response.json()
    return result


def _path(share: dict[str, object]) -> str:
    return "/s/" + str(share["url"]).rsplit("/s/", 1)[1]


def test_create_list_and_qr(site: Site) -> None:
    share = _create(site, expires_in_days=10, pin="4321", allow_download=True)
    assert str(share["url"]).startswith("http://testserver/s/") and len(_path(share)) >= 3 + 22
    assert share["status"] == "active" and share["has_pin"] and share["allow_download"]
    assert share["created_by"] == "admin" and "pin" not in share
    listed = site.client("admin").get(f"/api/studies/{site.owned_uid}/shares").json()
    assert share["url"] in [s["url"] for s in listed]
    png = site.client("admin").get(str(share["qr_png"]))
    assert png.headers["content-type"] == "image/png" and Image.open(io.BytesIO(png.content)).size[0] >= 200
    svg = site.client("admin").get(str(share["qr_svg"]))
    assert svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content


def test_expiry_is_bounded(site: Site) -> None:
    url = f"/api/studies/{site.owned_uid}/shares"
    too_long = site.client("admin").post(url, json={"expires_in_days": 366}, headers=site.headers("admin"))
    assert too_long.status_code == 400 and "365" in too_long.text
    bad_pin = site.client("admin").post(url, json={"pin": "12"}, headers=site.headers("admin"))
    assert bad_pin.status_code == 400
    default = _create(site)
    assert str(default["expires_at"])[:10] == (utcnow() + timedelta(days=30)).strftime("%Y-%m-%d")


def test_patient_shares_own_study_only(site: Site) -> None:
    _create(site, "patient")
    other = site.client("patient").post(f"/api/studies/{site.other_uid}/shares", json={},
                                        headers=site.headers("patient"))
    assert other.status_code == 404


def test_opening_a_link_scopes_the_browser_to_one_study(site: Site) -> None:
    share = _create(site)
    visitor = site.new_client()
    page = visitor.get(_path(share))
    assert page.status_code == 200 and 'id="study-data"' in page.text
    assert page.headers["referrer-policy"] == "no-referrer" and "noindex" in page.headers["x-robots-tag"]
    assert '<meta name="robots" content="noindex' in page.text
    assert visitor.get(frame_url(site.owned[0])).status_code == 200
    assert visitor.get(frame_url(site.other[0])).status_code == 404
    assert visitor.get(f"/viewer/studies/{site.other_uid}").status_code == 404
    assert visitor.get("/dicomweb/studies").status_code == 403
    assert visitor.get("/viewer/worklist").status_code == 403
    assert visitor.get(f"/api/studies/{site.owned_uid}/archive.zip").status_code == 403  # no download allowed
    views = [s for s in site.client("admin").get(f"/api/studies/{site.owned_uid}/shares").json()
             if s["url"] == share["url"]][0]["views"]
    assert views == 1


def test_download_when_the_link_allows_it(site: Site) -> None:
    share = _create(site, allow_download=True)
    visitor = site.new_client()
    visitor.get(_path(share))
    archive = visitor.get(f"/api/studies/{site.owned_uid}/archive.zip")
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    assert visitor.get(f"/api/studies/{site.owned_uid}/film.pdf").content.startswith(b"%PDF")


def test_pin_and_lockout(fresh_site: Site) -> None:
    share = _create(fresh_site, pin="2468")
    visitor = fresh_site.new_client()
    first = visitor.get(_path(share))
    assert first.status_code == 200 and 'name="pin"' in first.text and "study-data" not in first.text
    assert visitor.get(frame_url(fresh_site.owned[0])).status_code == 401  # nothing before the PIN
    for left in (4, 3, 2, 1):
        wrong = visitor.post(_path(share), data={"pin": "0000"})
        assert wrong.status_code == 401 and f"{left} attempt" in wrong.text
    locked = visitor.post(_path(share), data={"pin": "0000"})
    assert locked.status_code == 429 and "locked" in locked.text
    assert visitor.post(_path(share), data={"pin": "2468"}).status_code == 429  # even the right one, for now
    assert visitor.get(_path(share)).status_code == 429
    with fresh_site.archive.engine.begin() as conn:
        conn.execute(text("UPDATE shares SET locked_until = :t"), {"t": utcnow() - timedelta(seconds=1)})
    opened = visitor.post(_path(share), data={"pin": "2468"}, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == _path(share)
    assert visitor.get(_path(share)).status_code == 200
    assert visitor.get(frame_url(fresh_site.owned[0])).status_code == 200


def test_expired_and_revoked_pages(fresh_site: Site) -> None:
    share = _create(fresh_site)
    visitor = fresh_site.new_client()
    assert visitor.get(_path(share)).status_code == 200
    assert visitor.get(frame_url(fresh_site.owned[0])).status_code == 200
    revoked = fresh_site.client("admin").delete(f"/api/studies/{fresh_site.owned_uid}/shares/{share['id']}",
                                                 headers=fresh_site.headers("admin"))
    assert revoked.status_code == 204
    gone = visitor.get(frame_url(fresh_site.owned[0]))
    assert gone.status_code == 401  # the share session ended with the link
    page = visitor.get(_path(share))
    assert page.status_code == 410 and "revoked" in page.text
    expiring = _create(fresh_site)
    with fresh_site.archive.engine.begin() as conn:
        conn.execute(text("UPDATE shares SET expires_at = :t WHERE id = :i"),
                     {"t": utcnow() - timedelta(minutes=1), "i": expiring["id"]})
    page = fresh_site.new_client().get(_path(expiring))
    assert page.status_code == 410 and "expired" in page.text
    unknown = fresh_site.new_client().get("/s/AAAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert unknown.status_code == 404 and "not valid" in unknown.text


def test_patient_claims_a_shared_study_with_the_birth_date(fresh_site: Site) -> None:
    share = _create(fresh_site)
    patient = fresh_site.new_client()
    login(patient, "pat2")
    page = patient.get(_path(share))
    assert page.status_code == 200 and "Add this study to my account" in page.text
    csrf = csrf_of(page.text)
    wrong = patient.post(_path(share) + "/claim", data={"birth_date": "1900-01-01", "csrf_token": csrf})
    assert wrong.status_code == 401
    birth = OWNER.birth_date
    ok = patient.post(_path(share) + "/claim", data={"birth_date": f"{birth[:4]}-{birth[4:6]}-{birth[6:]}",
                                                     "csrf_token": csrf}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/viewer/home"
    patient.cookies.delete("cf_share")
    home = patient.get("/viewer/home")
    assert fresh_site.owned_uid in home.text
    assert patient.post(_path(share) + "/claim", data={"birth_date": "1900-01-01", "csrf_token": "x"}).status_code \
        == 403


def test_public_url_is_used_for_links(tmp_path: object) -> None:
    from pathlib import Path

    from tests.viewer_api.portal.conftest import build_site

    for site in build_site(Path(str(tmp_path)), public_url="https://film.example.org/"):
        c = site.new_client()
        token = c.post("/api/auth/token", data={"username": "doc", "password": PASSWORD}).json()["access_token"]
        share = c.post(f"/api/studies/{site.owned_uid}/shares", json={},
                       headers={"Authorization": f"Bearer {token}"}).json()
        assert share["url"].startswith("https://film.example.org/s/")
