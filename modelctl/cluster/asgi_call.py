"""One HTTP request through an ASGI app in this process, without a socket.

A replica answers the requests the ingress forwards to it with the daemon's own app
(``Listener`` around ``create_app``): every route, error body and limit is the
daemon's, byte for byte. Forwarded requests carry their parts as plain values, since
they cross a Ray call, not a connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message


@dataclass
class ForwardedRequest:
    method: str
    path: str
    query: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


@dataclass
class ForwardedResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


async def call_app(app: ASGIApp, request: ForwardedRequest) -> ForwardedResponse:
    """Run ``request`` through ``app`` and collect its whole response."""
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": request.method, "scheme": "http", "path": request.path,
        "raw_path": request.path.encode(), "root_path": "",
        "query_string": request.query, "headers": request.headers,
        "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0),
    }
    sent_body = False
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    answered = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent_body
        if sent_body:
            # The ingress holds this call until the answer is whole (and cancels it if its
            # own client goes): like a live connection, no disconnect before then, or
            # the daemon's routes would drop the work as abandoned.
            await answered.wait()
            return {"type": "http.disconnect"}
        sent_body = True
        return {"type": "http.request", "body": request.body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                answered.set()

    await app(scope, receive, send)
    return ForwardedResponse(status, headers, b"".join(chunks))
