"""A rolling upgrade: two nodes of different versions on one PostgreSQL database and one S3 bucket.

The newer version is this version's code with migrations appended (as the next release would
ship them), run from a copy of the source tree. Its expand-only upgrade leaves the older node
serving (intake, query and retrieve on both nodes at once), and the older version even restarts
against the upgraded index. A release that contracts the schema (``contract = True`` on its
migration) makes the older version stop with a sentence instead of running on a schema it does
not know."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from pacs.archive import Archive
from pacs.index import db
from pacs.settings import Settings
from tests.cli import run_cli, serving
from tests.conftest import archive_settings
from tests.e2e.test_ai_pipeline import REPO, only_test_plugins
from tests.e2e.test_nodes import _admin, _c_store, _node_env, _studies
from tests.factories import PATIENTS, make_ct_study
from tests.net import free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]

EXPAND = '''
"""the next release: a table and a nullable column the older version never reads"""
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("next_release_notes", sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("note", sa.String(200), nullable=True))
    op.add_column("studies", sa.Column("next_release_note", sa.String(64), nullable=True))
'''

CONTRACT = '''
"""a later release: drops a column (older code that still named it would break)"""
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None
contract = True


def upgrade() -> None:
    op.drop_column("studies", "next_release_note")
'''


@pytest.fixture
def shared(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Settings]:
    for settings in archive_settings("postgres-s3", tmp_path / "shared", request):
        only_test_plugins(settings)
        yield settings


def _release(root: Path, *migrations: str) -> Path:
    """A copy of this version's source tree with ``migrations`` appended after its newest revision."""
    for package in ("pacs", "viewer_api", "ai_plugins", "migrations"):
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    down = db.revisions()[-1]
    for n, body in enumerate(migrations):
        revision = f"9{n:03d}"
        (root / "migrations" / "versions" / f"{revision}_next_release.py").write_text(
            body.format(revision=revision, down=down))
        down = revision
    return root


def _newer_env(settings: Settings, tmp_path: Path, name: str, release: Path) -> dict[str, str]:
    env = _node_env(settings, tmp_path, name)
    env["PYTHONPATH"] = f"{release}:{env['PYTHONPATH']}"  # the newer code shadows the installed one
    return env


def _revision(settings: Settings) -> str | None:
    with Archive.open(settings, create=False, migrate=False) as archive:
        return db.current_revision(archive.engine)


def _instance(url: str, ds: object) -> bytes:
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)  # type: ignore[attr-defined]
    got = httpx.get(f"{url}/dicomweb/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}",
                    headers={**_admin(url), "Accept": 'multipart/related; type="application/dicom"'}, timeout=30)
    assert got.status_code == 200, got.text
    return got.content.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]


def test_an_older_node_keeps_serving_while_a_newer_one_expands_the_schema(shared: Settings, tmp_path: Path) -> None:
    head = db.revisions()[-1]
    expand = _release(tmp_path / "release-expand", EXPAND)
    studies = [make_ct_study(PATIENTS[i], n_slices=3, rows=32, cols=32, seed=8100 + i) for i in range(3)]
    ports = {name: free_port() for name in ("old", "new", "old-again")}
    with ExitStack() as stack:
        old, _ = stack.enter_context(serving(tmp_path / "old" / "data", env=_node_env(shared, tmp_path, "old"),
                                             CLOUDFILM_DICOM_PORT=str(ports["old"])))
        assert len(_c_store(ports["old"], studies[0])) == 3
        assert _revision(shared) == head

        new, _ = stack.enter_context(serving(tmp_path / "new" / "data",
                                             env=_newer_env(shared, tmp_path, "new", expand),
                                             CLOUDFILM_DICOM_PORT=str(ports["new"])))
        assert _revision(shared) == "9000"  # the newer node upgraded the shared index

        # both versions take studies and see everything at once
        assert len(_c_store(ports["old"], studies[1])) == 3
        assert len(_c_store(ports["new"], studies[2])) == 3
        uids = {str(s[0].StudyInstanceUID) for s in studies}
        assert _studies(old) >= uids and _studies(new) >= uids
        for ds in (studies[1][0], studies[2][0]):
            assert _instance(old, ds) == _instance(new, ds)

        # the older version starts again against the upgraded index: a node restarted mid-rollout
        again, log = stack.enter_context(serving(tmp_path / "old-again" / "data",
                                                 env=_node_env(shared, tmp_path, "old-again"),
                                                 CLOUDFILM_DICOM_PORT=str(ports["old-again"])))
        assert "only expanded the schema" in log.read_text()
        assert _studies(again) >= uids
        assert _revision(shared) == "9000"  # and never migrated it down

    # a later release contracts the schema: from then on the older version refuses to start
    contract = _release(tmp_path / "release-contract", EXPAND, CONTRACT)
    env = _newer_env(shared, tmp_path, "contract", contract)
    upgraded = run_cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert _revision(shared) == "9001"
    refused = run_cli("serve", env=_node_env(shared, tmp_path, "old") | {
        "CLOUDFILM_HTTP_PORT": str(free_port()), "CLOUDFILM_DICOM_PORT": str(free_port())})
    assert refused.returncode != 0
    assert "schema revision 9001" in refused.stderr and "revision 9001 or newer" in refused.stderr, refused.stderr
