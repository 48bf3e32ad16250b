"""Signing in: the login page and session cookie, OAuth2 tokens, API keys, CSRF, rate limiting."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest

from pacs.accounts.users import set_disabled
from tests.viewer_api.portal.conftest import PASSWORD, Site, bearer, login


def test_login_sets_a_safe_session_cookie(fresh_site: Site) -> None:
    c = fresh_site.new_client(base_url="https://testserver")
    response = c.post("/login", data={"username": "doc", "password": PASSWORD, "next": "/viewer/worklist"},
                      follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/viewer/worklist"
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith("cf_session=") and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" in cookie and "path=/" in cookie
    assert c.get("/viewer/worklist").status_code == 200
    plain = fresh_site.new_client()  # http: the cookie must still work, without Secure
    over_http = plain.post("/login", data={"username": "doc", "password": PASSWORD}, follow_redirects=False)
    assert "secure" not in over_http.headers["set-cookie"].lower()
    assert plain.get("/viewer/worklist").status_code == 200


def test_wrong_password_shows_the_login_page_again(site: Site) -> None:
    c = site.new_client()
    response = c.post("/login", data={"username": "doc", "password": "nope"}, follow_redirects=False)
    assert response.status_code == 401 and "Wrong username or password." in response.text
    assert "cf_session" not in response.headers.get("set-cookie", "")


def test_pages_ask_anonymous_browsers_to_sign_in(site: Site) -> None:
    response = site.new_client().get("/viewer/worklist?name=x", headers={"Accept": "text/html"})
    assert response.status_code == 401 and 'name="password"' in response.text
    assert 'value="/viewer/worklist?name=x"' in response.text  # comes back here after signing in
    api = site.new_client().get("/dicomweb/studies")
    assert api.status_code == 401 and api.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:x"])
def test_no_open_redirect_after_login(site: Site, target: str) -> None:
    c = site.new_client()
    response = c.post("/login", data={"username": "doc", "password": PASSWORD, "next": target},
                      follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/viewer/"


def test_oauth2_password_flow(site: Site) -> None:
    c = site.new_client()
    response = c.post("/api/auth/token", data={"username": "doc", "password": PASSWORD})
    body = response.json()
    assert response.status_code == 200 and body["token_type"] == "bearer" and body["expires_in"] == 15 * 60
    assert response.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["typ"] == "access" and claims["exp"] - claims["iat"] == 15 * 60
    me = c.get("/api/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["username"] == "doc" and me.json()["role"] == "physician"
    assert c.post("/api/auth/token", data={"username": "doc", "password": "x"}).status_code == 401


def test_invalid_bearer_tokens_are_refused(site: Site) -> None:
    c = site.new_client()
    key = site.app.state.authenticator.key
    good = bearer(c, "doc")
    uid = jwt.decode(good, options={"verify_signature": False})["sub"]
    expired = jwt.encode({"typ": "access", "sub": uid, "exp": 1_000_000}, key, algorithm="HS256")
    session_as_access = site.app.state.authenticator.signer.issue("session", int(uid), timedelta(minutes=5))[0]
    forged = jwt.encode({"typ": "access", "sub": uid, "exp": 4_000_000_000}, b"x" * 32, algorithm="HS256")
    none_alg = jwt.encode({"typ": "access", "sub": uid, "exp": 4_000_000_000}, None, algorithm="none")
    for token in (expired, session_as_access, forged, none_alg, "garbage", "cfk_notakey"):
        response = c.get("/dicomweb/studies", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
        assert "invalid_token" in response.headers["www-authenticate"]
    assert c.get("/dicomweb/studies", headers={"Authorization": "Basic ZG9jOng="}).status_code == 401


def test_api_keys_are_created_used_and_revoked(site: Site) -> None:
    c = site.new_client()
    token = bearer(c, "doc")
    auth = {"Authorization": f"Bearer {token}"}
    created = c.post("/api/auth/keys", json={"name": "script"}, headers=auth)
    assert created.status_code == 201 and created.json()["key"].startswith("cfk_")
    key = created.json()["key"]
    machine = site.new_client()
    assert machine.get("/dicomweb/studies", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    listed = c.get("/api/auth/keys", headers=auth).json()
    assert [k["name"] for k in listed] == ["script"] and listed[0]["key"] is None
    assert c.delete(f"/api/auth/keys/{created.json()['id']}", headers=auth).status_code == 204
    assert machine.get("/dicomweb/studies", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_disabling_a_user_ends_sessions_tokens_and_keys(fresh_site: Site) -> None:
    c = fresh_site.new_client()
    login(c, "doc")
    token = bearer(fresh_site.new_client(), "doc")
    assert c.get("/viewer/worklist").status_code == 200
    set_disabled(fresh_site.archive.engine, "doc")
    response = c.get("/viewer/worklist", headers={"Accept": "text/html"})
    assert response.status_code == 401
    assert "cf_session=;" in response.headers.get("set-cookie", "").replace('""', "")  # the stale cookie is cleared
    assert fresh_site.new_client().get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert fresh_site.new_client().post("/login", data={"username": "doc", "password": PASSWORD},
                                        follow_redirects=False).status_code == 401


def test_logout(fresh_site: Site) -> None:
    c = fresh_site.new_client()
    csrf = login(c, "doc")
    assert c.post("/logout", data={"csrf_token": "wrong"}, follow_redirects=False).status_code == 403
    response = c.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert c.get("/viewer/worklist").status_code == 401


def test_cookie_authenticated_changes_need_the_csrf_token(site: Site) -> None:
    admin = site.client("admin")
    url = f"/api/studies/{site.owned_uid}/shares"
    assert admin.post(url, json={}).status_code == 403
    assert admin.post(url, json={}, headers={"X-CSRF-Token": "forged"}).status_code == 403
    ok = site.headers("admin")
    assert admin.post(url, json={}, headers=ok).status_code == 201
    assert admin.post(url, json={}, headers=ok | {"Origin": "https://evil.example"}).status_code == 403
    assert admin.post(url, json={}, headers=ok | {"Sec-Fetch-Site": "cross-site"}).status_code == 403
    # a bearer token is not sent automatically by browsers: no CSRF token needed
    assert site.client("physician").post(url, json={}).status_code == 201


def test_login_form_refuses_cross_site_posts(site: Site) -> None:
    response = site.new_client().post("/login", data={"username": "doc", "password": PASSWORD},
                                      headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert response.status_code == 403


def test_login_rate_limit(fresh_site: Site) -> None:
    c = fresh_site.new_client()
    for _ in range(3):  # login_max_failures=3 in fresh_site
        assert c.post("/api/auth/token", data={"username": "doc", "password": "wrong"}).status_code == 401
    limited = c.post("/api/auth/token", data={"username": "doc", "password": PASSWORD})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "900"
    page = c.post("/login", data={"username": "doc", "password": PASSWORD}, follow_redirects=False)
    assert page.status_code == 429 and "Too many failed sign-ins" in page.text
    # another account from the same address is not yet limited (3 x 3 per address)
    assert c.post("/api/auth/token", data={"username": "pat", "password": PASSWORD}).status_code == 200


def test_auth_disabled_opens_everything_as_local_admin(tmp_path: object) -> None:
    from pathlib import Path

    from fastapi.testclient import TestClient

    from pacs.archive import Archive
    from tests.viewer_api.portal.conftest import portal_settings
    from viewer_api.app import create_app

    with Archive.open(portal_settings(Path(str(tmp_path)), auth_disabled=True)) as archive:
        c = TestClient(create_app(archive))
        assert c.get("/viewer/worklist").status_code == 200
        assert c.get("/api/auth/me").json()["role"] == "admin"


def test_plugin_job_tokens_reach_one_study_only(site: Site) -> None:
    from ai_plugins.runner.tokens import issue_job_token
    from tests.factories import to_bytes

    token, _ = issue_job_token(site.app.state.authenticator.key, study_uid=site.owned_uid, job_id=7,
                               plugin="acme@1.0", lifetime=timedelta(minutes=5))
    c = site.new_client(headers={"Authorization": f"Bearer {token}"})
    assert c.get(f"/dicomweb/studies/{site.owned_uid}/metadata").status_code == 200
    assert c.get(f"/dicomweb/studies/{site.owned_uid}/series").status_code == 200
    assert c.get(f"/dicomweb/studies/{site.other_uid}/metadata").status_code == 403
    assert c.get("/dicomweb/studies").status_code == 403
    assert c.get(f"/viewer/studies/{site.owned_uid}").status_code == 403
    assert c.get("/api/auth/me").status_code == 403
    boundary = "job-boundary"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + to_bytes(site.owned[0])
            + f"\r\n--{boundary}--\r\n".encode())
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    assert c.post(f"/dicomweb/studies/{site.owned_uid}", content=body, headers=headers).status_code == 200
    assert c.post("/dicomweb/studies", content=body, headers=headers).status_code == 403
    assert c.post(f"/dicomweb/studies/{site.other_uid}", content=body, headers=headers).status_code == 403
    assert c.delete(f"/dicomweb/studies/{site.owned_uid}").status_code == 403


def test_bearer_clients_may_write_from_another_origin(site: Site) -> None:
    response = site.client("physician").post(f"/api/studies/{site.owned_uid}/shares", json={},
                                             headers={"Origin": "https://ohif.example"})
    assert response.status_code == 201
