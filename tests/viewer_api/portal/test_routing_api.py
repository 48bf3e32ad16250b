"""Routing over HTTP: ``GET /api/routing`` shows each destination's queue and the rules, the
forwarding log filters, re-sends answer 202/404/409, every request is audited, non-admins are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pacs.jobs import write_transaction
from pacs.routing.dispatch import dispatch, mark_dead
from pacs.routing.status import list_forwards
from tests.factories import PATIENTS, make_ct_study
from tests.net import free_port
from tests.viewer_api.portal.conftest import Site, build_site, store


@pytest.fixture
def routed_site(tmp_path: Path) -> Iterator[Site]:
    destinations = {"pacs2": {"kind": "dicom", "aet": "PACS2", "host": "127.0.0.1", "port": free_port(),
                              "concurrency": 2}}
    rules = [{"name": "mr", "to": ["pacs2"], "match": {"Modality": "MR"}}]
    yield from build_site(tmp_path, routing_destinations=destinations, routing_rules=rules)


def test_routing_state_log_and_resends(routed_site: Site) -> None:
    archive = routed_site.archive
    admin, headers = routed_site.client("admin"), routed_site.headers("admin")
    settings = archive.settings

    def run_dispatch() -> None:
        dispatch(archive.engine, archive.store, settings.routing_rules, settings.routing_destinations)

    run_dispatch()  # the rule's cursor starts after the site's studies
    store(archive, make_ct_study(PATIENTS[4], n_slices=2, rows=16, cols=16, seed=88, modality="MR"))
    store(archive, make_ct_study(PATIENTS[5], n_slices=1, rows=16, cols=16, seed=89))  # CT: not matched
    run_dispatch()

    state = admin.get("/api/routing").json()
    (dest,) = state["destinations"]
    assert (dest["name"], dest["kind"], dest["configured"], dest["pending"], dest["sent"], dest["dead"]) == \
        ("pacs2", "dicom", True, 2, 0, 0)  # fmt: skip
    assert dest["active_jobs"] == 1 and dest["peer"].startswith("PACS2@127.0.0.1:")
    assert state["rules"] == [{"name": "mr", "on": "arrival", "to": ["pacs2"], "match": {"Modality": "MR"},
                               "deidentify": False, "partition": "default",
                               "last_seq": state["rules"][0]["last_seq"]}]  # fmt: skip
    assert state["rules"][0]["last_seq"] >= 3

    forwards = admin.get("/api/routing/forwards", params={"destination": "pacs2"}).json()
    assert len(forwards) == 2 and {f["status"] for f in forwards} == {"pending"}
    assert admin.get("/api/routing/forwards", params={"status": "lost"}).status_code == 400
    assert admin.get("/api/routing/forwards", params={"status": "sent"}).json() == []

    pending = admin.post(f"/api/routing/forwards/{forwards[0]['id']}/resend", headers=headers)
    assert pending.status_code == 409 and "still pending" in pending.text
    assert admin.post("/api/routing/forwards/99999/resend", headers=headers).status_code == 404
    assert admin.post("/api/routing/destinations/nowhere/resend", headers=headers).status_code == 404

    with write_transaction(archive.engine) as conn:
        mark_dead(conn, forwards[0]["id"], "PACS2 answered C-STORE status 0xA700", 0xA700)
    dead = admin.get("/api/routing/forwards", params={"status": "dead"}).json()
    assert [(f["id"], f["status_code"]) for f in dead] == [(forwards[0]["id"], 0xA700)]
    resent = admin.post("/api/routing/destinations/pacs2/resend", headers=headers)
    assert resent.status_code == 202 and resent.json() == {"resent": 1}
    assert {f.status.value for f in list_forwards(archive.engine)} == {"pending"}

    # Three more studies: their lanes wait while the destination has `concurrency` (2) jobs active.
    for seed in (90, 91, 92):
        store(archive, make_ct_study(PATIENTS[seed % 6], n_slices=1, rows=16, cols=16, seed=seed, modality="MR"))
    run_dispatch()
    run_dispatch()
    (dest,) = admin.get("/api/routing").json()["destinations"]
    assert (dest["pending"], dest["active_jobs"]) == (5, 2)

    assert routed_site.client("physician").get("/api/routing").status_code == 403
    audit = admin.get("/api/audit", params={"action": "routing", "limit": "50"}).json()
    assert any("/api/routing/destinations/pacs2/resend 202" in a["detail"] for a in audit)
    assert any(a["outcome"] == "denied" and a["username"] == "doc" for a in audit)
