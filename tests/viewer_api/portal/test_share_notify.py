"""Share links over HTTP that warn before they break and that go to the patient by e-mail: the
``warnings`` of the API (and the QR code's ``Warning`` header) while no CLOUDFILM_PUBLIC_URL is set
on loopback, an ``email`` sent by a real SMTP server's measure (aiosmtpd), and the account's own
address for report notices."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacs.accounts.keys import secret_key
from pacs.accounts.users import get_user
from pacs.notify.delivery import deliver
from pacs.notify.outbox import DeliveryStatus, deliveries
from pacs.notify.senders import notifiers
from tests.smtp_server import Mailbox, mailbox
from tests.viewer_api.portal.conftest import Site, build_site, login


def _post(site: Site, body: dict[str, object], kind: str = "admin") -> Any:
    return site.client(kind).post(f"/api/studies/{site.owned_uid}/shares", json=body, headers=site.headers(kind))


def test_a_loopback_archive_without_public_url_warns_when_sharing(site: Site) -> None:
    made = _post(site, {})
    assert made.status_code == 201
    [warning] = made.json()["warnings"]
    assert "only this computer can open" in warning and "CLOUDFILM_PUBLIC_URL" in warning
    listed = site.client("admin").get(f"/api/studies/{site.owned_uid}/shares").json()
    assert all(s["warnings"] == [warning] for s in listed)
    qr = site.client("admin").get(made.json()["qr_png"])
    assert qr.status_code == 200 and qr.headers["Warning"].startswith('299 cloudfilm "This link points at')


def test_a_browser_on_loopback_is_warned_even_when_the_server_listens_everywhere(tmp_path: Path) -> None:
    for site in build_site(tmp_path, http_host="0.0.0.0"):
        made = {}
        for host in ("192.0.2.7", "127.0.0.1"):
            browser = site.new_client(base_url=f"http://{host}:8000")
            csrf = login(browser, "admin")
            made[host] = browser.post(f"/api/studies/{site.owned_uid}/shares", json={},
                                      headers={"X-CSRF-Token": csrf}).json()  # fmt: skip
        assert made["192.0.2.7"]["warnings"] == []
        assert "http://127.0.0.1:8000" in made["127.0.0.1"]["warnings"][0]


def test_no_warning_once_public_url_is_set(tmp_path: Path) -> None:
    for site in build_site(tmp_path, public_url="https://films.hospital.example/"):
        made = _post(site, {})
        assert made.json()["warnings"] == []
        qr = site.client("admin").get(made.json()["qr_svg"])
        assert "Warning" not in qr.headers


def test_an_address_needs_a_configured_sender(site: Site) -> None:
    no_smtp = _post(site, {"email": "anna@patients.example"})
    assert no_smtp.status_code == 400 and "CLOUDFILM_SMTP_HOST" in no_smtp.text
    no_sms = _post(site, {"phone": "+41 79 123 45 67"})
    assert no_sms.status_code == 400 and "CLOUDFILM_SMS_WEBHOOK_URL" in no_sms.text


@pytest.fixture
def smtp() -> Iterator[Mailbox]:
    with mailbox() as box:
        yield box


def test_a_link_made_with_an_address_is_mailed_there(tmp_path: Path, smtp: Mailbox) -> None:
    for site in build_site(tmp_path, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_starttls=False,
                           smtp_from="films@hospital.example"):
        bad = _post(site, {"email": "not an address"})
        assert bad.status_code == 400 and "not an e-mail address" in bad.text
        made = _post(site, {"email": "juergen@patients.example", "expires_in_days": 5}, kind="physician")
        assert made.status_code == 201
        share = made.json()
        # The mailed link is built from the listener's address, which only this machine opens.
        assert "http://127.0.0.1:0" in share["warnings"][0]
        [owed] = deliveries(site.archive.engine)
        assert owed.status is DeliveryStatus.PENDING and owed.recipient == "juergen@patients.example"
        assert owed.created_by == "doc"
        settings = site.archive.settings
        assert deliver(site.archive.engine, settings, secret_key(settings), owed.id, notifiers(settings)).status \
            is DeliveryStatus.SENT
        [mail] = smtp.mails()
        token = str(share["url"]).rsplit("/s/", 1)[1]
        assert re.findall(r"http://\S+", mail.text) == [f"http://127.0.0.1:0/s/{token}"]
        assert mail.text.startswith("Hello Jürgen,")  # staff sent it to the patient
        logged = site.client("admin").get("/api/notifications").json()
        assert [(d["status"], d["recipient"]) for d in logged] == [("sent", "juergen@patients.example")]
        trail = site.client("admin").get("/api/audit", params={"action": "share-create"}).json()
        assert any("sent by email to juergen@patients.example" in str(e) for e in trail)


def test_an_account_sets_its_own_address(fresh_site: Site) -> None:
    client, headers = fresh_site.client("patient"), fresh_site.headers("patient")
    bad = client.put("/api/auth/me/email", json={"email": "nope"}, headers=headers)
    assert bad.status_code == 400
    ok = client.put("/api/auth/me/email", json={"email": "pat@patients.example"}, headers=headers)
    assert ok.status_code == 200 and ok.json() == {"email": "pat@patients.example"}
    assert get_user(fresh_site.archive.engine, "pat").email == "pat@patients.example"
    cleared = client.put("/api/auth/me/email", json={"email": ""}, headers=headers)
    assert cleared.json() == {"email": None} and get_user(fresh_site.archive.engine, "pat").email is None
