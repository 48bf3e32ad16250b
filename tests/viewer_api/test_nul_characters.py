"""NUL characters anywhere in a request are a clear 400 on PostgreSQL (which refuses them in any
statement parameter), never a 500: in the path, in any query parameter, in a JSON body."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from pacs.accounts.api_keys import create_api_key
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.settings import Settings
from tests.factories import make_ct_study, to_bytes
from tests.pg import temporary_database
from viewer_api.app import create_app

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str], str]]:
    with temporary_database() as url:
        settings = Settings(data_dir=tmp_path_factory.mktemp("nul") / "data", database_url=url,
                            secret_key=SecretStr("nul-test-secret-0123456789"))  # fmt: skip
        with Archive.open(settings) as archive:
            create_user(archive.engine, "ad", "correct horse battery", "admin")
            headers = {"Authorization": f"Bearer {create_api_key(archive.engine, 'ad', 'test')[1]}"}
            ds = make_ct_study(n_slices=1, rows=16, cols=16, seed=901)[0]
            assert archive.ingest.store_bytes(to_bytes(ds)).ok
            with TestClient(create_app(archive), raise_server_exceptions=False) as client:
                yield client, headers, str(ds.StudyInstanceUID)
            archive.engine.dispose()


@pytest.mark.parametrize(("url", "named"), [
    ("/api/audit?user=a%00b", "user value 'a\\x00b'"),
    ("/api/audit?study=1.2%003", "study value '1.2\\x003'"),
    ("/api/jobs?study=1.2%003", "study value"),
    ("/dicomweb/studies?PatientName=abc%00def", "PatientName value 'abc\\x00def'"),
    ("/wado?requestType=WADO&studyUID=1%002&seriesUID=1&objectUID=1", "studyUID value"),
    ("/api/studies/1.2%003/findings", "the request path"),
    ("/api/benchmarks/a%00b", "the request path"),
    ("/dicomweb/studies/1.2.3%00/metadata", "the request path"),
])  # fmt: skip
def test_a_nul_in_the_url_is_400_naming_where(pg_client: tuple[TestClient, dict[str, str], str], url: str,
                                              named: str) -> None:  # fmt: skip
    client, headers, _study = pg_client
    rsp = client.get(url, headers=headers)
    assert rsp.status_code == 400, rsp.text
    assert named in rsp.text and "holds a NUL character" in rsp.text


def test_a_nul_in_a_json_body_is_400(pg_client: tuple[TestClient, dict[str, str], str]) -> None:
    client, headers, _study = pg_client
    rsp = client.post("/api/benchmarks", headers=headers,
                      json={"name": "nul-test", "task": "detection", "description": "a\u0000b"})  # fmt: skip
    assert rsp.status_code == 400, rsp.text
    assert "NUL character" in rsp.text
    assert client.get("/api/benchmarks/nul-test", headers=headers).status_code == 404  # nothing half-made
    assert client.get("/readyz").status_code == 200
