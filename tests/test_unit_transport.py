"""The client's one transport-error boundary, without a daemon.

``TRANSPORT_ERRORS`` maps what sockets and ``http.client`` raise to the error tree; the
retry test runs a real stdlib server that closes every kept-alive connection after one
answer, over a Unix socket and over TCP, so each second request meets a connection the
server has closed and must be retried once on a fresh one.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelctl.client import TRANSPORT_ERRORS, Client, transport_error
from modelctl.errors import (
    DaemonError,
    DaemonNotRunning,
    DaemonUnreachable,
    ModelctlError,
    ServerClosed,
)

WHERE = "unix:/run/x.sock"


@pytest.mark.parametrize(("exc", "cls", "words"), [
    (FileNotFoundError(2, "No such file or directory"), DaemonNotRunning,
     f"no modelctl daemon is running at {WHERE}"),
    (ConnectionRefusedError(111, "Connection refused"), DaemonNotRunning,
     f"no modelctl daemon is running at {WHERE}"),
    (ConnectionResetError(104, "Connection reset by peer"), DaemonNotRunning,
     f"the daemon at {WHERE} closed the connection: [Errno 104] Connection reset by peer"),
    (BrokenPipeError(32, "Broken pipe"), DaemonNotRunning, "closed the connection"),
    (ServerClosed("the daemon closed the connection"), DaemonNotRunning,
     "closed the connection: the daemon closed the connection"),
    (ConnectionAbortedError(103, "aborted"), DaemonUnreachable,
     "cannot talk to the modelctl daemon: [Errno 103] aborted"),
    (TimeoutError("timed out"), DaemonUnreachable,
     "cannot talk to the modelctl daemon: timed out"),
    (TimeoutError(), DaemonUnreachable, "cannot talk to the modelctl daemon: TimeoutError"),
    (socket.gaierror(-2, "Name or service not known"), DaemonUnreachable,
     "Name or service not known"),
    (DaemonUnreachable("BadStatusLine"), DaemonUnreachable,
     "cannot talk to the modelctl daemon: BadStatusLine"),
])
def test_transport_failures_map_into_the_tree(exc: Exception, cls: type[DaemonError],
                                              words: str) -> None:
    mapped = transport_error(exc, WHERE)
    assert type(mapped) is cls and mapped is not None and words in mapped.message


@pytest.mark.parametrize("exc", [PermissionError(13, "Permission denied"), ValueError("x"),
                                 DaemonError("served by uid 1234, not by you")])
def test_other_failures_pass_as_they_are(exc: Exception) -> None:
    assert transport_error(exc, WHERE) is None


def test_every_row_raises_a_daemon_error() -> None:
    for key, (cls, template) in TRANSPORT_ERRORS.items():
        assert issubclass(cls, DaemonError) and issubclass(cls, ModelctlError), key
        assert "{where}" in template or "{exc}" in template


# -- keep-alive retry against a server that closes idle connections ------------------
class OneAnswerServer:
    """Answers one request per connection with ``{"n": count}`` and closes it without
    saying so (no ``Connection: close``): a client that reuses the connection finds it
    closed."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.answered = 0
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if not data:
                    continue
                self.answered += 1
                body = json.dumps({"n": self.answered}).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accept() (close alone does not)
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture(params=["unix", "tcp"])
def one_answer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    if request.param == "unix":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(tmp_path / "s.sock"))
        client = Client(socket_path=tmp_path / "s.sock", timeout=10)
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        client = Client(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=10)
    listener.listen(8)
    server = OneAnswerServer(listener)
    yield client
    client.close()
    server.close()


def test_a_request_on_a_connection_the_server_closed_is_retried_once(
        one_answer: Client) -> None:
    answers = [one_answer.request("GET", "/v1/health")["n"] for _ in range(5)]
    assert answers == [1, 2, 3, 4, 5]


def test_no_daemon_at_the_address(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="no modelctl daemon is running at unix:"):
        Client(socket_path=tmp_path / "none.sock").health()
    # A socket file nobody listens on: refused, the same answer.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    with pytest.raises(DaemonNotRunning, match="no modelctl daemon"):
        Client(socket_path=tmp_path / "stale.sock").health()


def test_a_timeout_is_unreachable_not_absent(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "slow.sock"))
    listener.listen(1)  # accepts (in the kernel's queue) and never answers
    try:
        with pytest.raises(DaemonUnreachable, match="cannot talk to the modelctl daemon"):
            Client(socket_path=tmp_path / "slow.sock", timeout=0.2).health()
    finally:
        listener.close()
