"""The change feed and webhooks over HTTP: admins only, every request audited, bad input refused
with a sentence, the webhook secret shown once, the delivery log readable."""

from __future__ import annotations

from pacs.accounts.keys import secret_key
from pacs.webhooks import registry
from tests.factories import PATIENTS, make_ct_study
from tests.viewer_api.portal.conftest import Site, store


def test_changefeed_pages_and_is_audited(fresh_site: Site) -> None:
    admin = fresh_site.client("admin")
    feed = admin.get("/api/changefeed").json()
    assert len(feed) >= 2 and [e["Sequence"] for e in feed] == list(range(1, len(feed) + 1))
    assert {e["Action"] for e in feed} == {"create"} and {e["State"] for e in feed} == {"current"}
    newest = admin.get("/api/changefeed/latest").json()
    assert newest["Sequence"] == feed[-1]["Sequence"]
    page = admin.get("/api/changefeed", params={"since": 1, "limit": 1, "includeMetadata": "true"}).json()
    assert [e["Sequence"] for e in page] == [2] and page[0]["Metadata"]["0020000D"]["Value"]
    assert admin.get("/api/changefeed", params={"since": newest["Sequence"]}).json() == []
    assert admin.get("/api/changefeed", params={"offset": 1, "limit": 1}).json()[0]["Sequence"] == 2
    assert admin.get("/api/changefeed", params={"action": "delete"}).json() == []
    bad = admin.get("/api/changefeed", params={"action": "created"})
    assert bad.status_code == 400 and "unknown change feed action 'created'" in bad.text
    assert admin.get("/api/changefeed", params={"since": -1}).status_code == 400
    assert admin.get("/api/changefeed", params={"limit": 5000}).status_code == 400
    assert fresh_site.client("physician").get("/api/changefeed").status_code == 403
    audit = admin.get("/api/audit", params={"action": "changefeed", "limit": "50"}).json()
    assert len(audit) >= 6 and {a["username"] for a in audit} >= {"admin"}
    assert any("since=1" in a["detail"] for a in audit)
    assert any(a["outcome"] == "denied" and a["username"] == "doc" for a in audit)


def test_webhooks_register_list_log_and_delete(fresh_site: Site) -> None:
    admin, headers = fresh_site.client("admin"), fresh_site.headers("admin")
    created = admin.post("/api/webhooks", json={"url": "http://127.0.0.1:9/hook", "actions": ["create", "stable"],
                                                "description": "RIS"}, headers=headers)  # fmt: skip
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_") and hook["actions"] == ["create", "stable"]
    assert hook["created_by"] == "admin" and hook["pending"] == 0 and hook["last_seq"] >= 2
    listed = admin.get("/api/webhooks").json()
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    assert "secret" not in admin.get(f"/api/webhooks/{hook['id']}").json()
    assert admin.get(f"/api/webhooks/{hook['id']}/deliveries").json() == []  # no new event yet
    assert admin.get(f"/api/webhooks/{hook['id']}/deliveries", params={"status": "lost"}).status_code == 400

    for body, why in [({"url": "ftp://x/y"}, "http:// or https://"), ({"url": "x"}, "http:// or https://"),
                      ({"url": "http://x/", "actions": ["nope"]}, "unknown change feed action"),
                      ({"url": "http://u:p@x/"}, "must not hold credentials")]:  # fmt: skip
        refused = admin.post("/api/webhooks", json=body, headers=headers)
        assert refused.status_code == 400 and why in refused.text
    assert admin.post("/api/webhooks", json={}, headers=headers).status_code == 400

    # A new event becomes a pending delivery once the dispatcher (the worker's housekeeping) runs.
    from pacs.webhooks.dispatch import dispatch

    store(fresh_site.archive, make_ct_study(PATIENTS[5], n_slices=1, rows=16, cols=16, seed=77))
    dispatch(fresh_site.archive.engine, max_attempts=2)
    [delivery] = admin.get(f"/api/webhooks/{hook['id']}/deliveries").json()
    assert delivery["status"] == "pending" and delivery["action"] == "create" and delivery["attempts"] == 0
    assert delivery["sequence"] == hook["last_seq"] + 1 and delivery["status_code"] is None

    # The secret is derived from the archive's key, the same on every process sharing the key.
    key = secret_key(fresh_site.archive.settings)
    assert registry.secret_of(fresh_site.archive.engine, key, hook["id"])[1] == hook["secret"]
    assert fresh_site.client("physician").post("/api/webhooks", json={"url": "http://x/"},
                                               headers=fresh_site.headers("physician")).status_code == 403
    assert admin.delete(f"/api/webhooks/{hook['id']}", headers=headers).status_code == 204
    assert admin.get(f"/api/webhooks/{hook['id']}").status_code == 404
    assert admin.get(f"/api/webhooks/{hook['id']}/deliveries").status_code == 404
    audit = admin.get("/api/audit", params={"action": "webhook", "limit": "100"}).json()
    assert any(a["detail"].startswith("POST /api/webhooks 201") for a in audit)
    assert any(a["detail"].startswith("DELETE /api/webhooks/") for a in audit)
