"""Connections that send too little, and too many of them: bounded per listener.

uvicorn closes a kept-alive connection idle between requests, but it has no timer on a
request being sent: a client that connects and sends nothing, or a byte at a time,
would hold its connection (a file descriptor) forever. ``guarded`` wraps uvicorn's
HTTP protocol with two deadlines, counted from a request's first byte (or from the
connection, for the first request): the head must arrive within the settings'
``request_head_s`` (10 s unless configured) and the whole body within ``request_body_s``
(60 s). Past either, the connection is closed.

TCP listeners also share a cap on open connections (``ConnectionCap``); one past the
cap is closed as soon as it is accepted. The Unix socket has no cap and its own
server, so however many TCP clients come, the daemon's own user still gets in.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

from modelctl.config import Timeouts

# Of the process's file descriptors, what TCP clients may hold; models, the socket's
# clients, log files and torch's own need the rest.
TCP_SHARE_OF_FDS = 0.5
MAX_TCP_CONNECTIONS = 4096


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class ConnectionCap:
    """Open connections of all TCP listeners together, and their limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    @classmethod
    def for_this_process(cls) -> ConnectionCap:
        return cls(min(MAX_TCP_CONNECTIONS, int(raise_fd_limit() * TCP_SHARE_OF_FDS)))


def guarded(base: type[asyncio.Protocol], cap: ConnectionCap | None,
            timeouts: Timeouts) -> type[asyncio.Protocol]:
    """uvicorn's protocol class ``base`` with the deadlines of ``timeouts`` and, if given,
    ``cap``."""

    class Guarded(base):  # type: ignore[valid-type, misc]
        _deadline: asyncio.TimerHandle | None = None
        _phase = ""
        _counted = False

        def connection_made(self, transport: Any) -> None:
            if cap is not None:
                if cap.open >= cap.limit:
                    transport.abort()  # before uvicorn sees it: no state to undo
                    return
                cap.open += 1
                self._counted = True
            super().connection_made(transport)
            self._arm("head", timeouts.request_head_s)

        def connection_lost(self, exc: Exception | None) -> None:
            if cap is not None:
                if not self._counted:
                    return  # refused at the cap: uvicorn never knew it
                cap.open -= 1
                self._counted = False
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = getattr(self, "cycle", None)
            if cycle is None or cycle.response_complete:
                if self._phase != "head":  # the first byte of the next request
                    self._arm("head", timeouts.request_head_s)
            elif cycle.more_body:
                if self._phase != "body":
                    self._arm("body", timeouts.request_body_s)
            else:
                self._disarm()  # a whole request is in: the app's time, not the client's

        def _arm(self, phase: str, seconds: float) -> None:
            self._disarm()
            self._phase = phase
            self._deadline = asyncio.get_running_loop().call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = None
            self._phase = ""

        def _too_slow(self) -> None:
            cycle = getattr(self, "cycle", None)
            if self._phase == "head" and cycle is not None and not cycle.response_complete:
                return  # a request is being answered; the next one's clock starts later
            transport = getattr(self, "transport", None)
            if transport is not None and not transport.is_closing():
                transport.close()

    Guarded.__name__ = f"Guarded{base.__name__}"
    return Guarded
