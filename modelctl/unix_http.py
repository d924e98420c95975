"""HTTP/1.1 over ``AF_UNIX``, just enough to talk to our own daemon.

``http.client`` would do, but importing it pulls in ``email`` and ``ssl`` (about 12 ms),
which is most of what `modelctl ls` would cost beyond Typer. The daemon is ours and
its answers are plain: a status line, headers, and a body framed by Content-Length
(chunked framing is handled too, for completeness). Requests are written whole and
connections are kept alive between requests.
"""

from __future__ import annotations

import os
import socket
import struct

from modelctl.errors import DaemonError, ServerClosed

_MAX_HEADER_BYTES = 64 * 1024


class UnixConnection:
    """One keep-alive connection to a Unix socket; not thread-safe (one per thread)."""

    def __init__(self, path: str, timeout: float | None) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.reused = False
        self._buffer = bytearray()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        owner = peer_uid(sock)
        if owner is not None and owner not in (os.getuid(), 0):
            # Another user's process holds this socket (planted in a dir others can write):
            # send it nothing, since requests carry texts, images and paths.
            sock.close()
            raise DaemonError(f"the socket {self.path} is served by uid {owner}, not by you; "
                              "refusing to talk to it. Set MODELCTL_RUNTIME_DIR to a "
                              "directory of your own")
        self.sock = sock
        self.reused = False
        self._buffer = bytearray()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def exchange(self, method: str, target: str, body: bytes | None,
                 headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Send one request and read its whole answer: (status, lower-cased headers, body)."""
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        lines = [f"{method} {target} HTTP/1.1", "Host: localhost"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body or b'')}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        status, response_headers = self._read_head()
        data = self._read_body(response_headers, bodiless=method == "HEAD" or
                               status in (204, 304) or 100 <= status < 200)
        self.reused = True
        if response_headers.get("connection", "").lower() == "close":
            self.close()
        return status, response_headers, data

    def _read_head(self) -> tuple[int, dict[str, str]]:
        head = self._read_until(b"\r\n\r\n", _MAX_HEADER_BYTES)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ServerClosed(f"not an HTTP answer: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers

    def _read_body(self, headers: dict[str, str], bodiless: bool) -> bytes:
        if bodiless:
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        if "content-length" in headers:
            return self._read_exactly(int(headers["content-length"]))
        # Neither: the body runs until the server closes the connection.
        while True:
            try:
                self._fill()
            except ServerClosed:
                break
        data = bytes(self._buffer)
        self._buffer.clear()
        self.close()
        return data

    def _read_chunked(self) -> bytes:
        out: list[bytes] = []
        while True:
            size_line = self._read_until(b"\r\n", _MAX_HEADER_BYTES)
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while self._read_until(b"\r\n", _MAX_HEADER_BYTES):
                    pass  # trailers, up to the blank line that ends them
                return b"".join(out)
            out.append(self._read_exactly(size))
            self._read_exactly(2)

    def _read_until(self, marker: bytes, limit: int) -> bytes:
        """The bytes before ``marker`` (which is consumed)."""
        while (end := self._buffer.find(marker)) < 0:
            if len(self._buffer) > limit:
                raise ServerClosed("the daemon's answer has an oversized header")
            self._fill()
        data = bytes(self._buffer[:end])
        del self._buffer[:end + len(marker)]
        return data

    def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(256 * 1024)
        if not chunk:
            raise ServerClosed("the daemon closed the connection")
        self._buffer += chunk


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux), else ``None``."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", creds)[1])
