"""Who the caller is allowed to see: the one FastAPI dependency every route takes its scope from.

Every DICOMweb, WADO-URI and viewer route depends on :func:`current_scope` and nothing else for
the studies it may show (who may call a route at all is the route's declared rule). It is the
accounts layer's: the principal the route's declared rule admitted (bearer token, API key, session
or share cookie; :mod:`viewer_api.auth.access`), turned into its scope by
``pacs.accounts.principal``.
"""

from __future__ import annotations

from viewer_api.auth.dependencies import current_scope

__all__ = ["current_scope"]
