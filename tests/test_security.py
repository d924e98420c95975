"""Security: a private runtime dir and socket, loopback and a key on TCP, no remote code,
no code in checkpoints, no fetching for TCP clients, and a log without secrets.

API-key behaviour of single routes lives in test_http_security.py; here every route the
app serves (read from its own OpenAPI document, so new routes are covered too) is checked
without the key.
"""

from __future__ import annotations

import http.client
import http.server
import inspect
import json
import os
import re
import stat
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelctl.client import Client
from modelctl.config import Settings
from modelctl.errors import DaemonError, InvalidArgument
from modelctl.testing import MINILM, TINY_CLIP_CONFIG, Daemon, make_tiny_clip

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534
as_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")


@pytest.fixture(scope="module")
def secure(keyed: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    """The keyed daemon (conftest.py: started by `daemon start --http PORT --api-key KEY`,
    debug logging on, in a runtime dir created readable by others), a tiny CLIP loaded."""
    props = make_tiny_clip(tmp_path_factory.mktemp("secure-clip"), arch="secure-tiny")
    keyed.client.load_model("secure-clip", "cpu", properties=props)
    return keyed


def wrong(key: str) -> str:
    """Another key of the same length and prefix: only the tail differs."""
    return key[:-16] + os.urandom(8).hex()


# -- the runtime dir and the socket -------------------------------------------------------

def test_runtime_files_are_private_to_the_user(secure: Daemon) -> None:
    runtime = secure.runtime_dir
    info = runtime.stat()
    assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700  # was 0755
    sock = secure.socket_path.stat()
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600
    for name in ("modelctl.lock", "modelctl.json", "modelctl.log"):
        assert stat.S_IMODE((runtime / name).stat().st_mode) == 0o600, name


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770])
def test_runtime_dir_others_can_write_is_refused(runtime_dir: Path, mode: int) -> None:
    os.chmod(runtime_dir, mode)
    d = Daemon(runtime_dir)
    for args in (["daemon", "start"], ["load", MINILM, "--device", "cpu"]):
        proc = d.cli(*args, timeout=60)
        assert proc.returncode != 0
        assert f"runtime dir {runtime_dir} can be written by other users" in proc.stderr
        assert "chmod 700" in proc.stderr and "Traceback" not in proc.stderr
    serve = d.cli("serve", timeout=60)
    assert serve.returncode != 0 and "can be written by other users" in serve.stderr
    # Refused, not silently "fixed": whatever others put there stays suspect.
    assert stat.S_IMODE(runtime_dir.stat().st_mode) == mode
    assert not d.socket_path.exists()


@as_root
def test_runtime_dir_of_another_user_is_refused(runtime_dir: Path, tmp_path: Path) -> None:
    os.chown(runtime_dir, NOBODY, NOBODY)
    d = Daemon(runtime_dir)
    for args in (["daemon", "start"], ["load", MINILM, "--device", "cpu"],
                 ["embed", MINILM, "hello"]):
        proc = d.cli(*args, timeout=60)
        assert proc.returncode != 0
        assert f"runtime dir {runtime_dir} belongs to uid {NOBODY}, not to you" in proc.stderr
        assert "MODELCTL_RUNTIME_DIR" in proc.stderr
    serve = d.cli("serve", timeout=60)
    assert serve.returncode != 0 and f"belongs to uid {NOBODY}" in serve.stderr
    assert not d.socket_path.exists()
    # A symlink another user planted, pointing at a dir of ours, is refused too.
    ours = tmp_path / "ours"
    ours.mkdir(mode=0o700)
    link = tmp_path / "planted"
    link.symlink_to(ours)
    os.lchown(link, NOBODY, NOBODY)
    proc = Daemon(link).cli("daemon", "start", timeout=60)
    assert proc.returncode != 0 and f"belongs to uid {NOBODY}" in proc.stderr


_FAKE_DAEMON = textwrap.dedent("""
    import os, socket, sys
    path, report = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    os.chmod(path, 0o666)
    s.listen(1)
    print("ready", flush=True)
    conn, _ = s.accept()
    conn.settimeout(3)
    got = b""
    try:
        while chunk := conn.recv(65536):
            got += chunk
    except OSError:
        pass
    open(report, "w").write(str(len(got)))
""")


@as_root
def test_socket_served_by_another_user_gets_nothing(tmp_path: Path) -> None:
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        pytest.skip("no system python for the other user")
    theirs = Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))
    os.chmod(theirs, 0o755)
    os.chown(theirs, NOBODY, NOBODY)
    sock, report = theirs / "modelctl.sock", theirs / "received"
    fake = subprocess.Popen([python, "-c", _FAKE_DAEMON, str(sock), str(report)],
                            user=NOBODY, group=NOBODY, stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        with pytest.raises(DaemonError, match=f"served by uid {NOBODY}, not by you"):
            Client(socket_path=sock).embeddings(MINILM, "a private text")
        fake.wait(timeout=10)
        assert report.read_text() == "0"  # not one byte of the request reached it
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.wait()


# -- TCP: loopback and the key -------------------------------------------------------------

def test_tcp_listens_on_loopback_by_default(secure: Daemon) -> None:
    import psutil

    assert Settings.from_env({}).http_host == "127.0.0.1"
    pid = secure.pid
    assert pid is not None
    listening = [c.laddr for c in psutil.Process(pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", secure.http_port)]
    assert secure.client.health()["http"] == f"http://127.0.0.1:{secure.http_port}"


def _routes(d: Daemon) -> list[tuple[str, str]]:
    """Every (method, path) of the app's OpenAPI document, plus the documents' own routes."""
    doc = d.client.request("GET", "/openapi.json")
    routes = [(method.upper(), path) for path, item in doc["paths"].items()
              for method in item if method in ("get", "post", "put", "patch", "delete")]
    assert len(routes) >= 12, routes
    return routes + [("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"),
                     ("GET", "/no/such/route"), ("POST", "/v1/health")]


def _tcp(d: Daemon, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    assert d.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=30)
    try:
        body = b"{}" if method in ("POST", "PATCH", "PUT") else None
        conn.request(method, path, body=body,
                     headers={"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read()
    finally:
        conn.close()


Headers = Callable[[str], dict[str, str]]  # the headers a client sends, given the key


@pytest.mark.parametrize("headers", [
    lambda k: {}, lambda k: {"x-api-key": wrong(k)}, lambda k: {"x-api-key": ""},
    lambda k: {"x-api-key": k[:-1]}, lambda k: {"x-api-key": k + "x"},
    lambda k: {"x-api-key": k.upper()}, lambda k: {"Authorization": f"Bearer {wrong(k)}"},
    lambda k: {"Authorization": f"Basic {k}"}, lambda k: {"Authorization": k},
    lambda k: {"api-key": k}, lambda k: {"Cookie": f"x-api-key={k}"},
], ids=["none", "wrong", "empty", "prefix", "longer", "upper", "bearer-wrong", "basic",
        "bare-authorization", "other-header", "cookie"])
def test_every_tcp_route_refuses_without_the_key(secure: Daemon, headers: Headers) -> None:
    assert secure.api_key is not None
    for method, path in _routes(secure):
        status, kind, data = _tcp(secure, method, path, headers(secure.api_key))
        assert (status, kind) == (401, "application/json"), (method, path, data)
        assert json.loads(data) == {
            "message": "missing or wrong API key: send it as x-api-key or Authorization: "
                       "Bearer", "code": "unauthorized", "type": "invalid_request",
            "link": None}


def test_key_in_query_string_is_not_a_key(secure: Daemon) -> None:
    key = secure.api_key
    status, _, _ = _tcp(secure, "GET", f"/v1/health?x-api-key={key}&api_key={key}", {})
    assert status == 401


@pytest.mark.parametrize("headers", [lambda k: {"x-api-key": k},
                                     lambda k: {"Authorization": f"Bearer {k}"},
                                     lambda k: {"authorization": f"bearer {k}"}],
                         ids=["x-api-key", "bearer", "bearer-lowercase"])
def test_every_tcp_route_answers_with_the_key(secure: Daemon, headers: Headers) -> None:
    assert secure.api_key is not None
    for method, path in _routes(secure):
        status, _, data = _tcp(secure, method, path, headers(secure.api_key))
        assert status != 401 and status < 500, (method, path, status, data)


def test_the_socket_needs_no_key(secure: Daemon) -> None:
    assert secure.client.health()["status"] == "ok"
    assert Client(socket_path=secure.socket_path).list_models()


def test_key_is_compared_in_constant_time() -> None:
    from modelctl.daemon.listener import Listener

    source = inspect.getsource(Listener._authorized)
    assert "hmac.compare_digest(" in source
    # No early-exit comparison of what the client sent with the key anywhere in the app.
    app_source = (REPO / "modelctl" / "daemon" / "listener.py").read_text()
    assert not re.search(r"(==|!=)\s*self\.api_key|self\.api_key\s*(==|!=)(?!\s*None)",
                         app_source)


def test_the_key_is_never_logged_or_shown(secure: Daemon) -> None:
    key = secure.api_key
    assert key is not None
    other = wrong(key)
    for headers in ({"x-api-key": key}, {"x-api-key": other}, {"Authorization": f"Bearer {key}"}):
        _tcp(secure, "GET", "/v1/health", headers)
        _tcp(secure, "POST", "/v1/models", headers)
        _tcp(secure, "GET", "/no/such/route", headers)
    shown = [secure.log(),
             secure.cli("daemon", "status", "--json", check=True).stdout,
             secure.cli("daemon", "logs", "-n", "1000", check=True).stdout,
             (secure.runtime_dir / "modelctl.json").read_text(),
             secure.client.metrics(),
             json.dumps(secure.client.health())]
    pid = secure.pid
    assert pid is not None
    # Started with --api-key, the daemon got it through its environment, not argv (which
    # every user on the machine can read with ps).
    shown.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
    for text in shown:
        assert key not in text and other not in text
    assert "listening on" in shown[0]  # the log was there to be read


# -- what the daemon will not run or fetch -------------------------------------------------

def test_no_trust_remote_code_anywhere_in_the_sources() -> None:
    offending = []
    for path in sorted((REPO / "modelctl").rglob("*.py")):
        text = path.read_text()
        if re.search(r"trust_remote_code['\"]?\s*[:=]\s*True", text):
            offending.append(str(path))
    assert offending == []


def test_custom_code_in_a_model_dir_is_not_run(secure: Daemon, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    model = tmp_path / "remote-code-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}))
    (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(InvalidArgument):
        secure.client.load_model(str(model), "cpu")
    assert not marker.exists()
    assert str(model) not in [m["name"] for m in secure.client.list_models()]


def test_checkpoints_load_with_weights_only(secure: Daemon, tmp_path: Path) -> None:
    import torch

    sources = "\n".join(p.read_text() for p in (REPO / "modelctl").rglob("*.py"))
    loads = re.findall(r"torch\.load\([^)]*\)", sources)
    assert loads and all("weights_only=True" in call for call in loads), loads
    assert "weights_only=True" in (REPO / "modelctl/daemon/loaders/open_clip.py").read_text()

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    arch = "secure-pickled"
    (tmp_path / f"{arch}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    checkpoint = tmp_path / f"{arch}.pt"
    torch.save({"state_dict": Payload()}, checkpoint)
    with pytest.raises(InvalidArgument, match="weights-only unpickler refused it"):
        secure.client.load_model("pickled-code", "cpu", properties={
            "name": arch, "type": "open_clip", "localpath": str(checkpoint)})
    assert not marker.exists()


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_HEAD = do_POST = do_GET  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


def test_tcp_clients_cannot_make_the_daemon_fetch_urls(secure: Daemon) -> None:
    """Over TCP, a URL in properties is refused unless the operator allowed downloads
    (this daemon did not); model names and inputs that are URLs are never fetched."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        tcp = secure.http_client()
        for scheme_url in (f"{url}/model.pt", f"{url.replace('http', 'https')}/m.pt"):
            with pytest.raises(InvalidArgument, match="MODELCTL_ALLOW_URL_DOWNLOADS"):
                tcp.load_model("fetch-me", "cpu", properties={
                    "name": "fetch-me", "type": "open_clip", "url": scheme_url})
        for client in (secure.client, tcp):
            with pytest.raises(InvalidArgument, match="http"):
                client.load_model("fetch-me", "cpu", properties={
                    "name": "fetch-me", "type": "open_clip", "url": "ftp://127.0.0.1/x.pt"})
            for name in (f"{url}/model", f"hf-hub:{url}/model"):
                with pytest.raises(InvalidArgument):
                    client.load_model(name, "cpu")
            # A URL among the inputs is a text like any other: embedded, never fetched.
            vectors = client.embed("secure-clip", [f"{url}/cat.png", "a cat"])
            assert len(vectors) == 2 and vectors[0] != vectors[1]
        time.sleep(0.2)
        assert _Recorder.seen == []
        assert "fetch-me" not in [m["name"] for m in secure.client.list_models()]
    finally:
        server.shutdown()
        server.server_close()


def test_tcp_cannot_name_files_on_the_daemons_machine(secure: Daemon, tmp_path: Path) -> None:
    tcp = secure.http_client()
    for name in ("/etc", "./x", "../x", "..", "~/x", "file:///etc", "hf-hub:/etc",
                 "hf-hub:../x"):
        with pytest.raises(InvalidArgument, match="only over the Unix socket"):
            tcp.load_model(name, "cpu")
    for props in ({"type": "open_clip", "localpath": str(tmp_path)},
                  {"type": "sbert", "name": str(tmp_path)},
                  {"type": "open_clip", "name": "hf-hub:" + str(tmp_path)},
                  {"type": "sbert", "url": f"file://{tmp_path}"}):
        with pytest.raises(InvalidArgument, match="only over the Unix socket"):
            tcp.load_model("x", "cpu", properties=props)
