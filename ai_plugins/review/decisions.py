"""The physicians' recorded decisions on AI findings, as read back (the newest per finding is current)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, func, select

from ai_plugins.review.models import AiReview


class ReviewView(BaseModel):
    """A recorded decision, as the API and the findings panel show it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    study_uid: str
    report_uid: str
    finding_key: str
    plugin_name: str
    plugin_version: str
    decision: str
    label: str
    changes: dict[str, list[object]]
    reviewer: str
    review_sr_uid: str
    created_at: datetime


def view_of(row: AiReview) -> ReviewView:
    return ReviewView(id=row.id, study_uid=row.study_uid, report_uid=row.report_uid, finding_key=row.finding_key,
                      plugin_name=row.plugin_name, plugin_version=row.plugin_version, decision=row.decision,
                      label=row.label, changes=json.loads(row.changes_json), reviewer=row.reviewer,
                      review_sr_uid=row.review_sr_uid, created_at=row.created_at)  # fmt: skip


def current_reviews(engine: Engine, study_uids: Iterable[str]) -> list[ReviewView]:
    """The current (newest) decision on each reviewed finding of these studies."""
    uids = sorted(set(study_uids))
    if not uids:
        return []
    newest = (select(func.max(AiReview.id)).where(AiReview.study_uid.in_(uids))
              .group_by(AiReview.report_uid, AiReview.finding_key))  # fmt: skip
    with engine.connect() as conn:
        rows = conn.execute(select(AiReview).where(AiReview.id.in_(newest)).order_by(AiReview.id)).all()
    return [view_of(AiReview(**r._mapping)) for r in rows]


def review_documents(engine: Engine, study_uid: str) -> frozenset[str]:
    """Every review SR of the study (current or not): the AI findings list does not list them as reports."""
    with engine.connect() as conn:
        return frozenset(conn.execute(select(AiReview.review_sr_uid).where(AiReview.study_uid == study_uid))
                         .scalars())  # fmt: skip
