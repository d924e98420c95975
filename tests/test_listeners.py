"""The daemon's TCP listeners from the CLI, and the access log of TCP requests.

``serve --http PORT`` on a port the running daemon already serves is not an error;
``daemon status`` lists every listener; ``daemon close-listener`` closes one while the
daemon, its socket and its models stay; every TCP request leaves one log line.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from modelctl.testing import Daemon, base_env, free_port


def get(port: int, path: str, key: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"x-api-key": key} if key else {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def refused(port: int) -> bool:
    try:
        get(port, "/")
    except ConnectionRefusedError:
        return True
    return False


def test_serve_on_a_port_the_daemon_serves_says_so(keyed: Daemon) -> None:
    for args in (["serve", "--http", str(keyed.http_port)],
                 ["daemon", "start", "--http", str(keyed.http_port)]):
        result = keyed.cli(*args)
        assert result.returncode == 0, result.stderr
        assert f"already serves http://127.0.0.1:{keyed.http_port}" in result.stderr
        assert "Address already in use" not in result.stderr
    assert keyed.client.health()["listeners"] == [keyed.url]


def test_status_lists_every_listener_and_one_closes(keyed: Daemon) -> None:
    key = keyed.api_key or ""
    second = free_port()
    assert keyed.cli("serve", "--http", str(second), "--api-key", key).returncode == 0
    url2 = f"http://127.0.0.1:{second}"
    assert keyed.client.health()["listeners"] == [keyed.url, url2]
    status = keyed.cli("daemon", "status", check=True).stdout
    http_rows = [line.split()[1] for line in status.splitlines() if line.startswith("http")]
    assert http_rows == [keyed.url, url2]
    assert get(second, "/models", key) == 200

    closed = keyed.cli("daemon", "close-listener", str(second), check=True)
    assert closed.stdout.strip() == f"closed {url2}"
    assert f"still listening on {keyed.url}" in closed.stderr
    assert refused(second)
    assert get(keyed.http_port or 0, "/models", key) == 200  # the other one stays
    assert keyed.client.health()["listeners"] == [keyed.url]
    status_file = json.loads((keyed.runtime_dir / "modelctl.json").read_text())
    assert status_file["http"] == keyed.url and keyed.alive()


def test_closing_the_first_listener_updates_the_status_file(keyed: Daemon) -> None:
    key = keyed.api_key or ""
    extra = free_port()
    keyed.cli("serve", "--http", str(extra), "--api-key", key, check=True)
    keyed.cli("daemon", "close-listener", str(keyed.http_port), check=True)
    try:
        assert keyed.client.health()["http"] == f"http://127.0.0.1:{extra}"
        assert json.loads((keyed.runtime_dir / "modelctl.json").read_text())["http"] == \
            f"http://127.0.0.1:{extra}"
    finally:  # put the module's listener back
        keyed.cli("serve", "--http", str(keyed.http_port), "--api-key", key, check=True)
        keyed.cli("daemon", "close-listener", str(extra), check=True)
    assert keyed.client.health()["listeners"] == [keyed.url]


def test_closing_a_port_not_served_is_a_clear_error(keyed: Daemon) -> None:
    result = keyed.cli("daemon", "close-listener", "9")
    assert result.returncode == 1
    assert "no listener on port 9" in result.stderr and keyed.url in result.stderr
    assert "--url" not in result.stderr  # no advice about a server it did not name


def test_listeners_close_only_over_the_socket(keyed: Daemon) -> None:
    key = keyed.api_key or ""
    conn = http.client.HTTPConnection("127.0.0.1", keyed.http_port, timeout=30)
    conn.request("DELETE", f"/v1/listeners?port={keyed.http_port}",
                 headers={"x-api-key": key})
    resp = conn.getresponse()
    assert resp.status == 400 and b"only over the Unix socket" in resp.read()
    conn.close()
    assert get(keyed.http_port or 0, "/", key) == 200


_ACCESS = re.compile(r"^\S+ \S+ INFO modelctl\.access: 127\.0\.0\.1:\d+ "
                     r"(GET|DELETE|POST) (\S+) (\d{3}) [\d.]+ms$")


def access_lines(log: str) -> list[tuple[str, str, str]]:
    return [m.groups() for m in map(_ACCESS.match, log.splitlines()) if m]


def test_every_tcp_request_is_logged_without_the_key(keyed: Daemon) -> None:
    key = keyed.api_key or ""
    earlier = len(keyed.log())  # the lines of this test only: the daemon is shared
    marker = f"/no/such/route/{time.monotonic_ns()}"
    assert get(keyed.http_port or 0, "/models", key) == 200
    assert get(keyed.http_port or 0, "/device/cpu", "wrong-key") == 401
    assert get(keyed.http_port or 0, f"{marker}?secret=1", key) == 404
    keyed.client.list_models()  # over the socket: not an access-log line
    deadline = time.monotonic() + 10
    while marker not in keyed.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = access_lines(keyed.log()[earlier:])
    assert ("GET", "/models", "200") in lines
    assert ("GET", "/device/cpu", "401") in lines
    assert ("GET", marker, "404") in lines  # the path, never the query string
    assert key and key not in keyed.log() and "secret=1" not in keyed.log()
    assert not any(path == "/v1/models" for _, path, _ in lines)


def test_foreground_serve_prints_the_access_log() -> None:
    runtime_dir = Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))
    port = free_port()
    env = base_env(runtime_dir)
    proc = subprocess.Popen([sys.executable, "-m", "modelctl", "serve", "--http", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(port, "/models") == 200:
                    break
            except ConnectionRefusedError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        shutil.rmtree(runtime_dir, ignore_errors=True)
    assert ("GET", "/models", "200") in access_lines(stderr), stderr
