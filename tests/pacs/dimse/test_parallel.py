"""Eight storescu associations storing one study at once: nothing lost, nothing doubled, exact counts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy import func, select

from pacs.index.models import Instance, Series, Study
from tests.factories import make_ct_study, write_files
from tests.pacs.dimse.support import AET, DCMTK_TIMEOUT_S, Node


def test_eight_parallel_associations_store_one_study(any_node: Node, tmp_path: Path) -> None:
    study: list[Dataset] = make_ct_study(n_slices=20, rows=32, cols=32, series_count=3, seed=77)
    files = write_files(study, tmp_path / "study")
    # Every instance is sent by one association; two of each association's share are also sent by its
    # neighbour at the same time (concurrent duplicates of the same SOP Instance).
    groups = [files[i::8] + files[(i + 1) % 8::8][:2] for i in range(8)]
    procs = [subprocess.Popen(["storescu", "-aet", f"MOD{i}", "-aec", AET, "127.0.0.1", str(any_node.port),
                               *map(str, group)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, group in enumerate(groups)]
    outputs = [p.communicate(timeout=DCMTK_TIMEOUT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, outputs
    with any_node.archive.engine.connect() as conn:
        sop_uids = conn.execute(select(Instance.sop_uid)).scalars().all()
        series = conn.execute(select(Series.series_uid, Series.instance_count)).all()
        counts = conn.execute(select(Study.series_count, Study.instance_count)).one()
        studies = conn.execute(select(func.count()).select_from(Study)).scalar_one()
    assert sorted(sop_uids) == sorted(ds.SOPInstanceUID for ds in study)  # none lost, none doubled
    assert studies == 1 and tuple(counts) == (3, 60)
    assert sorted(n for _uid, n in series) == [20, 20, 20]
