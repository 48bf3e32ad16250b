"""The one query engine shared by C-FIND (pacs.dimse) and QIDO-RS (viewer_api.dicomweb)."""

from pacs.query.attributes import CATALOGUE, QIDO_DEFAULTS, UNIQUE_KEY, Attribute, Level, resolve_keyword
from pacs.query.engine import Match, QueryRequest, compile_query, run_query

__all__ = [
    "CATALOGUE",
    "QIDO_DEFAULTS",
    "UNIQUE_KEY",
    "Attribute",
    "Level",
    "Match",
    "QueryRequest",
    "compile_query",
    "resolve_keyword",
    "run_query",
]
