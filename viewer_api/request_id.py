"""One ID per HTTP request, in every log line logged while it is handled and in its response.

A client's (or proxy's) ``X-Request-ID`` is kept when it is a plain token, so a request can be
followed through a load balancer; otherwise the archive makes one.
"""

from __future__ import annotations

import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pacs import logs

HEADER = b"x-request-id"
_TOKEN = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers", [])).get(HEADER, b"")
        request_id = sent if _TOKEN.match(sent) else secrets.token_hex(8).encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, request_id)]
            await send(message)

        with logs.bound(request=request_id.decode("ascii")):
            await self.app(scope, receive, send_with_id)
