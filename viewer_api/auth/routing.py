"""Routes that carry their access rule, and the start-up check that every route does.

:class:`DeclaredRoute` is the route class of every router of the app: it finds the one
:class:`~viewer_api.auth.access.Rule` among the route's dependencies when the route is built (and
refuses to be built without one), and admits each request by it before the method, the body or the
parameters are looked at, so that a caller the rule refuses never gets a 405, a 400 or a parsed
body. :class:`DeclaredMount` does the same for mounted apps (the static files) and
:class:`DeclaredFallback` for paths that match no route. :func:`check_declared` refuses an app
holding any other kind of route: a new route never falls through to "any signed-in user".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from viewer_api.auth.access import Rule, admit


class UndeclaredAccess(RuntimeError):
    """A route (or the app) without a declared access rule: a programming error caught at start-up."""


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any] | None]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def declared_rule(dependant: Dependant, where: str) -> Rule:
    """The one access rule among ``dependant``'s dependencies (the route's and its router's)."""
    rules = {call for call in _calls(dependant) if isinstance(call, Rule)}
    if len(rules) != 1:
        found = ", ".join(sorted(r.name for r in rules)) or "none"
        raise UndeclaredAccess(f"{where} must declare exactly one access rule (found: {found})")
    return rules.pop()


async def _admit(rule: Rule, scope: Scope, receive: Receive) -> None:
    # CORS preflights carry no credentials; they get the route's 405 (or the CORS middleware's answer).
    if scope["type"] == "http" and scope["method"] != "OPTIONS":
        await admit(rule, Request(scope, receive))


class DeclaredRoute(APIRoute):
    """An API route admitted by its declared rule before anything else runs."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.rule = declared_rule(self.dependant, f"{', '.join(sorted(self.methods or ()))} {path}")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _admit(self.rule, scope, receive)
        await super().handle(scope, receive, send)


class DeclaredMount(Mount):
    """A mounted ASGI app (static files) admitted by ``rule``."""

    def __init__(self, path: str, app: ASGIApp, *, rule: Rule, name: str | None = None) -> None:
        super().__init__(path, app=app, name=name)
        self.rule = rule

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _admit(self.rule, scope, receive)
        await super().handle(scope, receive, send)


class DeclaredFallback:
    """The answer to a path that matches no route: 404 to the callers ``rule`` admits."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # none are served
            await WebSocketClose()(scope, receive, send)
            return
        await _admit(self.rule, scope, receive)
        raise HTTPException(404, "there is no such page or resource")


@dataclass(frozen=True, slots=True)
class AppRoute:
    """One route of an app as requests reach it: its full path (prefixes included) and methods."""

    path: str
    methods: frozenset[str]
    route: BaseRoute

    @property
    def rule(self) -> Rule | None:
        return self.route.rule if isinstance(self.route, DeclaredRoute | DeclaredMount) else None

    def __str__(self) -> str:
        return f"{', '.join(sorted(self.methods))} {self.path}".strip()


def app_routes(app: FastAPI) -> Iterator[AppRoute]:
    """Every route of ``app``, the routes of included routers too."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:  # FastAPI before lazy router inclusion copies included routes into app.routes
        for route in app.routes:
            yield AppRoute(getattr(route, "path", ""), frozenset(getattr(route, "methods", None) or ()), route)
        return
    for context in contexts(app.routes):
        yield AppRoute(context.path or "", frozenset(context.methods or ()), context.original_route)


def check_declared(app: FastAPI) -> None:
    """Raise :class:`UndeclaredAccess` unless every route of ``app`` declares its access rule."""
    undeclared = [str(r) for r in app_routes(app) if r.rule is None]
    if not isinstance(app.router.default, DeclaredFallback):
        undeclared.append("paths that match no route")
    if undeclared:
        raise UndeclaredAccess("these routes declare no access rule: " + "; ".join(undeclared))
