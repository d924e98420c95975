"""One access-log line per TCP request: client, method, path, status, duration.

Wraps a TCP listener's ASGI app, outside everything else, so requests refused before
the app (a wrong key, a body over the limit) are logged too. The time comes from the
log format. Only the path is written: the query string and headers (the API key) never.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("modelctl.access")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        started = time.perf_counter()

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            client = scope.get("client")
            who = f"{client[0]}:{client[1]}" if client else "-"
            # Escaped: a client's control characters cannot forge log lines.
            path = repr(scope["path"])[1:-1]
            log.info("%s %s %s %s %.1fms", who, scope["method"], path, status or "-",
                     (time.perf_counter() - started) * 1000)
