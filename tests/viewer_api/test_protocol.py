"""Protocol hygiene: 405 with Allow, 400/404 for bad paths, error bodies, CORS, the access scope."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pacs.access import AccessScope
from pacs.archive import Archive
from tests.factories import make_ct_study, to_bytes
from tests.viewer_api.conftest import STOW_TYPE, dicomweb_settings, make_app, store_all, stow_body


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/dicomweb/studies/1.2.3", "GET, HEAD, POST, DELETE"),
    ("DELETE", "/dicomweb/studies", "GET, HEAD, POST"),
    ("POST", "/dicomweb/studies/1.2/series/1.3/metadata", "GET, HEAD"),
    ("PATCH", "/dicomweb/studies/1.2/series/1.3/instances/1.4/frames/1", "GET, HEAD"),
    ("POST", "/dicomweb/instances", "GET, HEAD"),
])  # fmt: skip
def test_wrong_method_is_405_with_allow(client: TestClient, method: str, path: str, allow: str) -> None:
    resp = client.request(method, path)
    assert resp.status_code == 405 and resp.headers["allow"] == allow
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/dicomweb/studies/..%2F..%2Fetc%2Fpasswd", "/dicomweb/studies/1.2..3/metadata",
                                  "/dicomweb/studies/1.2.3/series/..%2Fx/metadata", "/dicomweb/studies/1.2.3%00",
                                  "/dicomweb/studies/<script>", "/dicomweb/studies/1.2.abc/series"])
def test_malformed_uids_and_paths_are_400(client: TestClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"].startswith("text/plain") and "<script>" not in resp.text


def test_unknown_resources_are_404_without_details(client: TestClient) -> None:
    for path in ("/dicomweb/nothing-here", "/dicomweb/studies/1.2.3/frames/1", "/dicomweb/studies/1.2.3"):
        resp = client.get(path)
        assert resp.status_code == 404 and "Traceback" not in resp.text and len(resp.text) < 200


def test_head_answers_like_get_without_a_body(client: TestClient, dw_archive: Archive) -> None:
    study = make_ct_study(n_slices=1, rows=8, cols=8, seed=41)
    store_all(dw_archive, study)
    resp = client.head(f"/dicomweb/studies/{study[0].StudyInstanceUID}/metadata")
    assert resp.status_code == 200 and resp.content == b""


def test_cors_is_off_by_default_and_configurable(client: TestClient, tmp_path: Path) -> None:
    origin = "https://viewer.example"
    closed = client.options("/dicomweb/studies", headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in closed.headers
    with Archive.open(dicomweb_settings(tmp_path, cors_origins=origin)) as archive:
        open_client = TestClient(make_app(archive))
        pre = open_client.options("/dicomweb/studies",
                                  headers={"Origin": origin, "Access-Control-Request-Method": "GET"})  # fmt: skip
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin
        got = open_client.get("/dicomweb/studies", headers={"Origin": origin})
        assert got.headers["access-control-allow-origin"] == origin
        other = open_client.get("/dicomweb/studies", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_every_route_applies_the_scope(tmp_path: Path) -> None:
    with Archive.open(dicomweb_settings(tmp_path)) as archive:
        seen = make_ct_study(n_slices=1, rows=8, cols=8, seed=42)
        hidden = make_ct_study(n_slices=1, rows=8, cols=8, seed=43)
        store_all(archive, [*seen, *hidden])
        client = TestClient(make_app(archive, AccessScope.studies(seen[0].StudyInstanceUID)))
        found = client.get("/dicomweb/studies").json()
        assert [s["0020000D"]["Value"][0] for s in found] == [seen[0].StudyInstanceUID]
        assert client.get("/dicomweb/instances").json()[0]["0020000D"]["Value"] == [seen[0].StudyInstanceUID]
        ds = hidden[0]
        study = f"/dicomweb/studies/{ds.StudyInstanceUID}"
        instance = f"{study}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        for path in (study, f"{study}/metadata", f"{study}/rendered", f"{study}/thumbnail", instance,
                     f"{instance}/metadata", f"{instance}/frames/1", f"{instance}/rendered",
                     f"{instance}/bulk/7FE00010", f"{study}/series", f"{study}/instances"):  # fmt: skip
            resp = client.get(path)
            assert resp.status_code == 404 or (resp.status_code == 200 and resp.json() == []), path
        wado = client.get("/wado", params={"requestType": "WADO", "studyUID": ds.StudyInstanceUID,
                                           "seriesUID": ds.SeriesInstanceUID, "objectUID": ds.SOPInstanceUID})
        assert wado.status_code == 404
        assert client.delete(study).status_code == 404
        assert client.get(f"/dicomweb/studies/{seen[0].StudyInstanceUID}/metadata").status_code == 200


def test_delete_can_be_turned_off(tmp_path: Path) -> None:
    with Archive.open(dicomweb_settings(tmp_path, dicomweb_delete=False)) as archive:
        study = make_ct_study(n_slices=1, rows=8, cols=8, seed=44)
        client = TestClient(make_app(archive))
        assert client.post("/dicomweb/studies", content=stow_body([to_bytes(study[0])]),
                           headers={"Content-Type": STOW_TYPE}).status_code == 200  # fmt: skip
        resp = client.delete(f"/dicomweb/studies/{study[0].StudyInstanceUID}")
        assert resp.status_code == 405 and resp.headers["allow"] == "GET, HEAD, POST"
        assert client.get(f"/dicomweb/studies/{study[0].StudyInstanceUID}/metadata").status_code == 200
