"""Moving one study's objects to a retention tier, consistent at every step.

Per batch of instances: copy each object to its key in the tier (durable there), then point the
index rows at the copies in one transaction (only rows still naming the old key: an instance
stored again meanwhile keeps its new object), then delete the old objects no row names any more.
A crash after a copy leaves an object no row names (``cloudfilm fsck --repair`` removes it); an
index row never names an object that is not there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from pacs.access import DEFAULT_PARTITION
from pacs.delete import remove_unreferenced
from pacs.errors import NotFound
from pacs.index.models import Instance, Study
from pacs.jobs import write_transaction
from pacs.storage import ObjectStore
from pacs.storage.tiers import TieredStore, tier_key

log = logging.getLogger(__name__)

BATCH = 64
_COPIERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="tier-copy")


@dataclass(frozen=True, slots=True)
class Moved:
    objects: int
    size_bytes: int
    stopped: bool = False  # the caller asked to stop before every object was moved


def move_study(engine: Engine, store: ObjectStore, study_uid: str, tier: str, *,
               stopping: Callable[[], bool] = lambda: False, partition: int = DEFAULT_PARTITION) -> Moved:  # fmt: skip
    """Move every object of ``partition``'s study ``study_uid`` not in ``tier`` yet into it; NotFound for an
    unknown study."""
    if not isinstance(store, TieredStore) or tier not in store.tiers:
        raise NotFound(f"retention tier {tier!r} is not configured")
    prefix = tier_key(tier, "")
    with engine.connect() as conn:
        study_id = conn.execute(select(Study.id).where(
            Study.study_uid == study_uid, Study.partition_fk == partition)).scalar_one_or_none()
        if study_id is None:
            raise NotFound("no such study")
        rows = conn.execute(select(Instance.id, Instance.object_key, Instance.size_bytes)
                            .where(Instance.study_fk == study_id,
                                   ~Instance.object_key.startswith(prefix, autoescape=True))
                            .order_by(Instance.id)).all()  # fmt: skip
    objects = size = 0
    for start in range(0, len(rows), BATCH):
        if stopping():
            return Moved(objects, size, stopped=True)
        batch = rows[start : start + BATCH]
        targets = {r.id: tier_key(tier, r.object_key) for r in batch}
        list(_COPIERS.map(store.copy, [r.object_key for r in batch], [targets[r.id] for r in batch]))
        with write_transaction(engine) as conn:
            kept = {r.id for r in batch if conn.execute(
                update(Instance).where(Instance.id == r.id, Instance.object_key == r.object_key)
                .values(object_key=targets[r.id])).rowcount}  # fmt: skip
        stale = [targets[r.id] for r in batch if r.id not in kept]  # stored again meanwhile: the copy is unneeded
        remove_unreferenced(engine, store, stale)
        left = remove_unreferenced(engine, store, [r.object_key for r in batch if r.id in kept])
        if left:
            log.warning("%d old object(s) of study %s stay until fsck --repair removes them", len(left), study_uid)
        objects += len(kept)
        size += sum(r.size_bytes for r in batch if r.id in kept)
    return Moved(objects, size)
