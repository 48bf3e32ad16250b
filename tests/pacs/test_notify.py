"""Telling patients: share links and signed reports become messages that a real SMTP server
(aiosmtpd) receives once, with the right link and nothing clinical; refusals, retries and the one
window of doubt; the SMS gateway behind the same interface (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from pacs.accounts.keys import secret_key
from pacs.accounts.models import Share
from pacs.accounts.patients import link_patient
from pacs.accounts.shares import create_share, find_share, revoke_share
from pacs.accounts.users import create_user, set_disabled, set_email
from pacs.archive import Archive
from pacs.errors import InvalidQuery
from pacs.events import EVENT_REPORT_SIGNED, record_event
from pacs.jobs import Job, write_transaction
from pacs.notify.addresses import check_email, check_phone
from pacs.notify.delivery import REPORT_PATH, deliver
from pacs.notify.messages import first_name, first_word
from pacs.notify.models import NotificationDelivery
from pacs.notify.outbox import DeliveryStatus, collect_reports, deliveries, start_jobs
from pacs.notify.senders import Notifier, notifiers
from pacs.partitions import PartitionConfig
from pacs.settings import Settings
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.jobsupport import DB_BACKENDS, db_settings
from tests.net import free_port
from tests.smtp_server import Mail, Mailbox, mailbox

PATIENT = PATIENTS[1]  # Müller^Jürgen, with an issuer
PASSWORD = "patient password 1"


@pytest.fixture
def smtp() -> Iterator[Mailbox]:
    with mailbox() as box:
        yield box


@pytest.fixture(params=[DB_BACKENDS[0], pytest.param(DB_BACKENDS[1], marks=pytest.mark.postgres)])
def archive(request: pytest.FixtureRequest, tmp_path: Path, smtp: Mailbox) -> Iterator[Archive]:
    with db_settings(request.param, tmp_path, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_starttls=False,
                     smtp_from="Radiology <films@hospital.example>", smtp_timeout=5.0,
                     public_url="https://films.hospital.example/",
                     institution_name="St. Example Hospital") as settings, Archive.open(settings) as opened:
        yield opened


def _study(archive: Archive, seed: int = 1) -> str:
    datasets = make_ct_study(PATIENT, n_slices=1, rows=8, cols=8, seed=seed, study_uid=f"1.2.826.0.13.{seed}")
    assert archive.ingest.store_bytes(to_bytes(datasets[0])).ok
    return str(datasets[0].StudyInstanceUID)


def _send_all(archive: Archive, senders: dict[str, Notifier] | None = None) -> list[DeliveryStatus]:
    """What the worker does: a job per pending delivery, then each job's attempt."""
    start_jobs(archive.engine, max_attempts=3, timeout_s=60)
    key = secret_key(archive.settings)
    with archive.engine.connect() as conn:
        ids = list(conn.execute(select(Job.target).where(Job.kind == "notify", Job.status == "queued")).scalars())
        conn.execute(update(Job).where(Job.kind == "notify").values(status="succeeded"))
        conn.commit()
    return [deliver(archive.engine, archive.settings, key, int(i), senders or notifiers(archive.settings)).status
            for i in ids]  # fmt: skip


def _assert_no_phi(mail: Mail, study_uid: str) -> None:
    """What a message must never hold: the family name, IDs, the birth date, the study's identity, the
    exam (the link's random token and the Message-ID aside, where any string may occur by chance)."""
    text = re.sub(r"https://\S+", "", mail.text)
    headers = "\n".join(f"{k}: {v}" for k, v in mail.message.items() if k != "Message-ID")
    for secret in ("Müller", PATIENT.patient_id, PATIENT.birth_date, "1958", study_uid, "KLINIKUM", "CT", "THORAX"):
        assert secret not in text and secret not in headers, secret


def test_a_share_link_made_with_an_address_is_mailed_once_with_its_link(archive: Archive, smtp: Mailbox) -> None:
    study = _study(archive)
    key = secret_key(archive.settings)
    share = create_share(archive.engine, key, study, created_by=None, expires_in_days=7, max_days=30, pin="2580",
                         notify=[("email", "anna@patients.example")], greet_patient=True)
    assert _send_all(archive) == [DeliveryStatus.SENT]
    assert _send_all(archive) == []  # nothing pending: no job, no second message
    [mail] = smtp.mails()
    assert mail.rcpt_tos == ["anna@patients.example"] and mail.mail_from == "films@hospital.example"
    assert mail.message["To"] == "anna@patients.example"
    assert mail.message["Subject"] == "Images shared with you by St. Example Hospital"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    links = re.findall(r"https://\S+", mail.text)
    assert links == [f"https://films.hospital.example/s/{share.token}"]
    opened = find_share(archive.engine, links[0].rsplit("/", 1)[1])
    assert opened is not None and opened.id == share.id  # the link opens this share
    assert mail.text.startswith("Hello Jürgen,") and "PIN" in mail.text and "2580" not in mail.text
    assert f"{share.expires_at:%d %B %Y}" in mail.text
    _assert_no_phi(mail, study)
    [logged] = deliveries(archive.engine)
    assert logged.status is DeliveryStatus.SENT and logged.attempts == 1 and logged.sent_at is not None
    assert mail.message["Message-ID"] == f"<{logged.message_id}@hospital.example>"
    # The database keeps no link: the token exists only in the message (and is derived again to send it).
    with archive.engine.connect() as conn:
        row = conn.execute(select(NotificationDelivery)).one()
    assert share.token and share.token not in json.dumps([str(v) for v in row])


def test_a_patient_passing_on_a_link_is_not_named(archive: Archive, smtp: Mailbox) -> None:
    study = _study(archive)
    create_share(archive.engine, secret_key(archive.settings), study, created_by=None, expires_in_days=7,
                 max_days=30, notify=[("email", "friend@example.org")], greet_patient=False)
    assert _send_all(archive) == [DeliveryStatus.SENT]
    assert smtp.mails()[0].text.startswith("Hello,\r\n") and "Jürgen" not in smtp.mails()[0].message.as_string()


def test_a_signed_report_mails_the_patient_accounts_with_an_address(archive: Archive, smtp: Mailbox) -> None:
    engine = archive.engine
    study = _study(archive)
    for name, email, full in (("jm", "jm@patients.example", "Jürgen Müller"), ("noaddress", None, ""),
                              ("gone", "gone@patients.example", ""), ("jm2", "jm2@patients.example", "")):
        create_user(engine, name, PASSWORD, "patient", full, email)
        link_patient(engine, name, PATIENT.patient_id, PATIENT.issuer or "")
    set_disabled(engine, "gone")
    create_user(engine, "doc", PASSWORD, "physician", "Dr Who", "doc@hospital.example")
    create_user(engine, "other", PASSWORD, "patient", "", "other@patients.example")
    link_patient(engine, "other", PATIENTS[0].patient_id)
    assert collect_reports(engine, channels=frozenset({"email"})) == 0  # the ingest's events are no reports

    with write_transaction(engine) as conn:  # what signing a report writes (pacs/reports)
        record_event(conn, EVENT_REPORT_SIGNED, study, detail={"report": "1.2.3.4", "version": 1})
    assert collect_reports(engine, channels=frozenset({"email"})) == 2
    assert collect_reports(engine, channels=frozenset({"email"})) == 0  # the cursor moved on
    assert sorted(_send_all(archive)) == [DeliveryStatus.SENT] * 2
    mails = {m.rcpt_tos[0]: m for m in smtp.mails()}
    assert sorted(mails) == ["jm2@patients.example", "jm@patients.example"]
    for mail in mails.values():
        assert re.findall(r"https://\S+", mail.text) == [f"https://films.hospital.example{REPORT_PATH}"]
        assert mail.message["Subject"] == "A report from St. Example Hospital is ready"
        _assert_no_phi(mail, study)
    assert mails["jm@patients.example"].text.startswith("Hello Jürgen,")  # the account's name
    assert mails["jm2@patients.example"].text.startswith("Hello Jürgen,")  # else the study's given name

    # An amendment is a new signature: one more message each; the same event seen twice, none.
    with write_transaction(engine) as conn:
        record_event(conn, EVENT_REPORT_SIGNED, study, detail={"report": "1.2.3.5", "version": 2})
    set_email(engine, "jm2", None)
    assert collect_reports(engine, channels=frozenset({"email"})) == 1
    assert _send_all(archive) == [DeliveryStatus.SENT]
    assert len(smtp.mails()) == 3


def test_reports_signed_while_no_channel_was_set_up_are_not_mailed_later(archive: Archive, smtp: Mailbox) -> None:
    study = _study(archive)
    create_user(archive.engine, "jm", PASSWORD, "patient", "", "jm@patients.example")
    link_patient(archive.engine, "jm", PATIENT.patient_id, PATIENT.issuer or "")
    with write_transaction(archive.engine) as conn:
        record_event(conn, EVENT_REPORT_SIGNED, study)
    assert collect_reports(archive.engine, channels=frozenset()) == 0
    assert collect_reports(archive.engine, channels=frozenset({"email"})) == 0
    assert _send_all(archive) == [] and smtp.mails() == []


def test_a_temporary_refusal_is_retried_and_a_permanent_one_is_not(archive: Archive, smtp: Mailbox) -> None:
    study = _study(archive)
    key = secret_key(archive.settings)
    create_share(archive.engine, key, study, created_by=None, expires_in_days=7, max_days=30,
                 notify=[("email", "a@patients.example")])
    smtp.answer = "451 4.3.0 try again later"
    assert _send_all(archive) == [DeliveryStatus.PENDING]
    [logged] = deliveries(archive.engine)
    assert logged.attempts == 1 and "451 4.3.0 try again later" in logged.last_error
    smtp.answer = "250 OK"
    assert deliver(archive.engine, archive.settings, key, logged.id, notifiers(archive.settings)).status \
        is DeliveryStatus.SENT
    assert len(smtp.mails()) == 1 and deliveries(archive.engine)[0].attempts == 2

    create_share(archive.engine, key, study, created_by=None, expires_in_days=7, max_days=30,
                 notify=[("email", "nobody@patients.example")])
    smtp.answer = "550 5.1.1 no such mailbox"
    assert _send_all(archive) == [DeliveryStatus.DEAD]
    assert "550 5.1.1 no such mailbox" in deliveries(archive.engine)[0].last_error


def test_the_server_down_leaves_the_message_pending(archive: Archive, tmp_path: Path) -> None:
    study = _study(archive)
    create_share(archive.engine, secret_key(archive.settings), study, created_by=None, expires_in_days=7,
                 max_days=30, notify=[("email", "a@patients.example")])
    down = notifiers(archive.settings.model_copy(update={"smtp_port": free_port()}))
    assert _send_all(archive, down) == [DeliveryStatus.PENDING]
    assert "could not be reached" in deliveries(archive.engine)[0].last_error


def test_a_message_with_no_answer_after_it_went_is_in_doubt_and_never_sent_again(archive: Archive,
                                                                                  smtp: Mailbox) -> None:
    study = _study(archive)
    key = secret_key(archive.settings)
    create_share(archive.engine, key, study, created_by=None, expires_in_days=7, max_days=30,
                 notify=[("email", "a@patients.example")])
    smtp.hold = threading.Event()  # the server has the message and says nothing
    impatient = notifiers(archive.settings.model_copy(update={"smtp_timeout": 1.0}))
    assert _send_all(archive, impatient) == [DeliveryStatus.UNKNOWN]
    smtp.hold.set()
    [logged] = deliveries(archive.engine)
    assert logged.status is DeliveryStatus.UNKNOWN and "no answer after the message went" in logged.last_error
    assert deliver(archive.engine, archive.settings, key, logged.id, notifiers(archive.settings)).status \
        is DeliveryStatus.UNKNOWN
    assert _send_all(archive) == []
    assert len(smtp.mails()) == 1


def test_a_delivery_left_sending_by_a_dead_worker_is_set_aside(archive: Archive, smtp: Mailbox) -> None:
    study = _study(archive)
    create_share(archive.engine, secret_key(archive.settings), study, created_by=None, expires_in_days=7,
                 max_days=30, notify=[("email", "a@patients.example")])
    with write_transaction(archive.engine) as conn:  # the worker died between the final "." and its record
        conn.execute(update(NotificationDelivery).values(status="sending", attempts=1))
    assert _send_all(archive) == []
    assert deliveries(archive.engine)[0].status is DeliveryStatus.UNKNOWN and smtp.mails() == []


def test_a_link_revoked_before_its_message_went_is_not_sent(archive: Archive, smtp: Mailbox) -> None:
    study = _study(archive)
    share = create_share(archive.engine, secret_key(archive.settings), study, created_by=None, expires_in_days=7,
                         max_days=30, notify=[("email", "a@patients.example")])
    revoke_share(archive.engine, study, share.id)
    assert _send_all(archive) == [DeliveryStatus.DEAD]
    assert "revoked" in deliveries(archive.engine)[0].last_error and smtp.mails() == []


def test_the_same_recipient_of_the_same_notification_is_written_once(archive: Archive) -> None:
    study = _study(archive)
    create_share(archive.engine, secret_key(archive.settings), study, created_by=None, expires_in_days=7,
                 max_days=30, notify=[("email", "a@patients.example"), ("email", "a@patients.example")])
    with archive.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(NotificationDelivery)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(Share)).scalar_one() == 1


class _Gateway(BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[tuple[dict[str, Any], dict[str, str]]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((body, dict(self.headers)))
        self.send_response(self.answers.pop(0) if self.answers else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_texts_go_to_the_sms_gateway_behind_the_same_interface(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Gateway.answers, _Gateway.received = [503], []
    try:
        settings = Settings(data_dir=tmp_path / "data", http_port=0, dicom_port=0, public_url="https://f.example",
                            sms_webhook_url=f"http://127.0.0.1:{server.server_address[1]}/sms",
                            sms_webhook_token="gateway-token")  # type: ignore[arg-type]
        with Archive.open(settings) as archive:
            study = _study(archive)
            share = create_share(archive.engine, secret_key(settings), study, created_by=None, expires_in_days=7,
                                 max_days=30, notify=[("sms", "+41791234567")])
            assert _send_all(archive) == [DeliveryStatus.PENDING]  # 503: retried
            [logged] = deliveries(archive.engine)
            assert deliver(archive.engine, settings, secret_key(settings), logged.id, notifiers(settings)).status \
                is DeliveryStatus.SENT
    finally:
        server.shutdown()
    (first, headers), (second, again) = _Gateway.received
    assert first == second and first["to"] == "+41791234567" and first["id"] == logged.message_id
    assert first["text"] == f"Images shared with you by Your hospital: https://f.example/s/{share.token}"
    assert headers["Idempotency-Key"] == again["Idempotency-Key"] == logged.message_id
    assert headers["Authorization"] == "Bearer gateway-token"


def test_addresses_and_first_names() -> None:
    assert check_email(" anna.m+films@patients.example ") == "anna.m+films@patients.example"
    for bad in ("anna", "anna@", "@x.example", "a b@x.example", "jürgen@x.example", "a@x", "a@-x.example"):
        with pytest.raises(InvalidQuery):
            check_email(bad)
    assert check_phone("+41 79 123 45 67") == "+41791234567"
    for bad in ("0791234567", "+0 79", "+41 79 abc"):
        with pytest.raises(InvalidQuery):
            check_phone(bad)
    assert first_name("Müller^Jürgen") == "Jürgen"
    assert first_name("van der Berg^Anna Maria") == "Anna"
    assert first_name("Yamada^Taro=山田^太郎=やまだ^たろう") == "Taro"
    assert first_name("Doe") == "" and first_name("") == ""
    assert first_word("Jürgen Müller") == "Jürgen" and first_word(" ") == ""


def test_report_notices_and_the_log_stay_in_their_partition(tmp_path: Path, smtp: Mailbox) -> None:
    """A report signed on a twin study (same UIDs) in one partition mails that partition's patient
    accounts only; each partition's delivery log holds its own messages."""
    with db_settings(DB_BACKENDS[0], tmp_path, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_starttls=False,
                     smtp_from="Radiology <films@hospital.example>", smtp_timeout=5.0,
                     public_url="https://films.hospital.example/") as base, \
            Archive.open(base.model_copy(update={"partitions": {"north": PartitionConfig(ae_titles=["NORTH"])}})) \
            as archive:  # fmt: skip
        engine, north = archive.engine, archive.partitions.by_slug("north")
        assert north is not None
        ds = make_ct_study(PATIENT, n_slices=1, rows=8, cols=8, seed=7, study_uid="1.2.826.0.13.77")[0]
        assert archive.ingest.store_bytes(to_bytes(ds)).ok
        assert archive.ingest.store_bytes(to_bytes(ds), partition=north).ok
        for name, partition in (("south-pat", 1), ("north-pat", north.id)):
            create_user(engine, name, PASSWORD, "patient", "", f"{name}@patients.example", partition=partition)
            link_patient(engine, name, PATIENT.patient_id, PATIENT.issuer or "")
        with write_transaction(engine) as conn:
            record_event(conn, EVENT_REPORT_SIGNED, str(ds.StudyInstanceUID), detail={"report": "1.2.3", "version": 1},
                         partition=north.id)  # fmt: skip
        assert collect_reports(engine, channels=frozenset({"email"})) == 1
        assert collect_reports(engine, channels=frozenset({"email"})) == 0
        assert [d.recipient for d in deliveries(engine, partition=north.id)] == ["north-pat@patients.example"]
        assert deliveries(engine) == []  # the default partition's log
        assert _send_all(archive) == [DeliveryStatus.SENT]
        assert [m.rcpt_tos[0] for m in smtp.mails()] == ["north-pat@patients.example"]
