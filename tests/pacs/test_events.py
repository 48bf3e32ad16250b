"""The change feed: every committed change once, in sequence order, with Microsoft's actions and
states; paging with ``since`` never skips an event, even one whose PostgreSQL transaction commits
after a later event became visible."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.delete import delete_instances
from pacs.events import (
    EVENT_AI_RESULT,
    Action,
    State,
    latest,
    parse_actions,
    read_feed,
    record_event,
    sequence_pending,
)
from pacs.index.models import OutboxEvent
from pacs.ingest import IngestService
from pacs.jobs import write_transaction
from pacs.stability import StabilityDetector
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.jobsupport import DB_BACKENDS, FakeClock, db_settings


@pytest.fixture(params=[DB_BACKENDS[0], pytest.param(DB_BACKENDS[1], marks=pytest.mark.postgres)])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    with db_settings(request.param, tmp_path) as settings, Archive.open(settings) as opened:
        yield opened


def _study(seed: int, n: int = 3, patient: int = 0) -> list:
    return make_ct_study(PATIENTS[patient], n_slices=n, rows=8, cols=8, seed=seed, study_uid=f"1.2.826.0.9.{seed}")


def test_created_updated_deleted_in_order_with_states(archive: Archive) -> None:
    study = _study(1)
    for ds in study:
        assert archive.ingest.store_bytes(to_bytes(ds)).ok
    first = read_feed(archive.engine)
    assert [e.sequence for e in first] == [1, 2, 3]
    assert {e.action for e in first} == {Action.CREATE}
    assert {e.state for e in first} == {State.CURRENT}
    assert [e.sop_uid for e in first] == [str(ds.SOPInstanceUID) for ds in study]
    assert first[0].study_uid == str(study[0].StudyInstanceUID)
    assert first[0].series_uid == str(study[0].SeriesInstanceUID)

    changed = study[1].copy()
    changed.StudyDescription = "corrected"
    overwriting = IngestService(archive.engine, archive.store, overwrite=True)
    assert overwriting.store_bytes(to_bytes(changed)).ok
    delete_instances(archive.engine, archive.store, AccessScope.everything(), study_uid=str(study[0].StudyInstanceUID),
                     sop_uid=str(study[2].SOPInstanceUID))  # fmt: skip

    feed = read_feed(archive.engine, include_metadata=True)
    assert [(e.sequence, e.action) for e in feed] == [
        (1, Action.CREATE), (2, Action.CREATE), (3, Action.CREATE), (4, Action.UPDATE), (5, Action.DELETE)]
    assert [e.state for e in feed] == [State.CURRENT, State.REPLACED, State.DELETED, State.CURRENT, State.DELETED]
    assert feed[3].sop_uid == feed[1].sop_uid == str(study[1].SOPInstanceUID)
    # Metadata only for instances as they are now.
    assert feed[0].metadata is not None and feed[0].metadata["0020000D"]["Value"] == [str(study[0].StudyInstanceUID)]
    assert feed[3].metadata is not None and feed[3].metadata["00081030"]["Value"] == ["corrected"]
    assert feed[1].metadata is None and feed[2].metadata is None and feed[4].metadata is None

    # Paging: since + limit walk the same events; latest is the newest.
    pages, since = [], 0
    while page := read_feed(archive.engine, since=since, limit=2):
        pages.append([e.sequence for e in page])
        since = page[-1].sequence
    assert pages == [[1, 2], [3, 4], [5]]
    newest = latest(archive.engine)
    assert newest is not None and newest.sequence == 5
    assert [e.sequence for e in read_feed(archive.engine, actions={Action.DELETE})] == [5]
    wire = feed[4].to_json()
    assert wire["Action"] == "delete" and wire["State"] == "deleted" and wire["Sequence"] == 5
    assert wire["Timestamp"].endswith("Z") and wire["Metadata"] is None
    assert set(wire) == {"Sequence", "StudyInstanceUid", "SeriesInstanceUid", "SopInstanceUid", "Action",
                         "Timestamp", "State", "Metadata"}


def test_stable_and_ai_result_events(archive: Archive) -> None:
    study = _study(2, n=2)
    for ds in study:
        assert archive.ingest.store_bytes(to_bytes(ds)).ok
    uid = str(study[0].StudyInstanceUID)
    clock = FakeClock()
    detector = StabilityDetector(archive.engine, 30.0, lambda conn, stable: None, clock=clock)
    clock.advance(31)
    assert len(detector.poll()) == 1
    with write_transaction(archive.engine) as conn:
        record_event(conn, EVENT_AI_RESULT, uid, "1.2.3.4", "1.2.3.4.5", detail={"Plugin": "demo"})
    feed = read_feed(archive.engine, since=2)
    assert [(e.action, e.state) for e in feed] == [(Action.STABLE, State.CURRENT), (Action.AI_RESULT, State.DELETED)]
    assert feed[0].detail == {"Generation": 1} and feed[0].sop_uid is None and feed[0].study_uid == uid
    assert feed[1].detail == {"Plugin": "demo"} and feed[1].to_json()["Detail"] == {"Plugin": "demo"}
    delete_instances(archive.engine, archive.store, AccessScope.everything(), study_uid=uid)
    stable = read_feed(archive.engine, actions={Action.STABLE})
    assert [e.state for e in stable] == [State.DELETED]  # the study is gone


def test_scopes_and_bad_input(archive: Archive) -> None:
    mine, theirs = _study(3, n=1, patient=0), _study(4, n=1, patient=1)
    for ds in mine + theirs:
        assert archive.ingest.store_bytes(to_bytes(ds)).ok
    key = (str(mine[0].PatientID), "")
    patient = AccessScope(patient_keys=frozenset({key}))
    assert [e.study_uid for e in read_feed(archive.engine, scope=patient)] == [str(mine[0].StudyInstanceUID)]
    hidden = AccessScope(all_studies=True, hidden_study_uids=frozenset({str(mine[0].StudyInstanceUID)}))
    assert [e.study_uid for e in read_feed(archive.engine, scope=hidden)] == [str(theirs[0].StudyInstanceUID)]
    assert read_feed(archive.engine, scope=AccessScope.nothing()) == []
    assert latest(archive.engine, AccessScope.nothing()) is None
    assert len(read_feed(archive.engine, since=-5, limit=10_000)) == 2  # clamped, not an error
    with pytest.raises(ValueError, match="unknown change feed action 'created'"):
        parse_actions(["created"])
    with write_transaction(archive.engine) as conn, pytest.raises(ValueError):
        record_event(conn, "made.up", "1.2.3")


@pytest.mark.postgres
def test_a_transaction_committing_late_is_not_skipped(tmp_path: Path) -> None:
    """Two PostgreSQL transactions: the one that took the lower row id commits last. A reader that
    paged past the other's event still gets it; paging by row id would have skipped it."""
    with db_settings("postgres", tmp_path) as settings, Archive.open(settings) as archive:
        engine = archive.engine
        slow, fast = engine.connect(), engine.connect()
        slow_tx = slow.begin()
        record_event(slow, "instance.stored", "1.1", "1.1.1", "1.1.1.1")
        fast_tx = fast.begin()
        record_event(fast, "instance.stored", "2.2", "2.2.2", "2.2.2.2")
        fast_tx.commit()

        seen = read_feed(engine)
        assert [e.study_uid for e in seen] == ["2.2"]
        since = seen[-1].sequence
        slow_tx.commit()
        slow.close()
        fast.close()
        later = read_feed(engine, since=since)
        assert [e.study_uid for e in later] == ["1.1"]
        with engine.connect() as conn:
            ids = dict(conn.execute(select(OutboxEvent.study_uid, OutboxEvent.id)).all())
        assert ids["1.1"] < ids["2.2"]  # the late one took the lower id: `id > last id seen` would skip it


@pytest.mark.postgres
def test_concurrent_writers_and_a_paging_reader_lose_nothing(tmp_path: Path) -> None:
    """Eight writers commit events after random delays while a reader pages with ``since``: the
    reader ends with every event exactly once, in increasing sequence order."""
    with db_settings("postgres", tmp_path) as settings, Archive.open(settings) as archive:
        engine = archive.engine
        per_writer, writers = 40, 8
        done = threading.Event()

        def write(w: int) -> None:
            rng = random.Random(w)
            for i in range(per_writer):
                with write_transaction(engine) as conn:
                    record_event(conn, "instance.stored", f"9.{w}", f"9.{w}.1", f"9.{w}.1.{i}")
                    time.sleep(rng.uniform(0, 0.01))

        got: list[int] = []
        seen_sops: list[str] = []

        def read() -> None:
            since = 0
            while True:
                finished = done.is_set()
                page = read_feed(engine, since=since, limit=17)
                got.extend(e.sequence for e in page)
                seen_sops.extend(e.sop_uid or "" for e in page)
                if page:
                    since = page[-1].sequence
                elif finished:
                    return

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        reader = threading.Thread(target=read)
        reader.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        reader.join(timeout=60)
        assert got == sorted(got) and len(got) == len(set(got))
        assert len(seen_sops) == per_writer * writers == len(set(seen_sops))
        assert sequence_pending(engine) == 0
