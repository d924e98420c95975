"""Hostile or careless clients through a real daemon and the real CLI: terminal escapes,
abandoned and oversized work, idle connections, DNS rebinding, kept-alive connections
the server closed, long texts, and the low-stakes rest."""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import pty
import resource
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelctl.client import Client
from modelctl.errors import ApiError, InvalidArgument
from modelctl.testing import (
    MINILM,
    Daemon,
    base_env,
    cosine,
    free_port,
    make_tiny_clip,
    minilm_path,
    modelctl_exe,
)


@pytest.fixture(scope="module")
def busy(daemon: Daemon) -> Iterator[Daemon]:
    """The shared daemon with MiniLM loaded, and nothing else, for this module."""
    daemon.client.eject(all=True, force=True)
    daemon.client.load_model(MINILM, "cpu")
    yield daemon
    daemon.client.eject(all=True, force=True)


# The daemon's connection timers (10 s for a request head, 30 s idle between requests)
# are settings: the module's impatient daemon has them short, so its tests need not wait
# out the defaults. It also answers one extra Host name, and runs with 256 descriptors.
IMPATIENT = {"MODELCTL_REQUEST_HEAD_TIMEOUT": "2s", "MODELCTL_IDLE_CONNECTION_TIMEOUT": "2s",
             "MODELCTL_ALLOWED_HOSTS": "models.internal"}
FD_LIMIT = 256


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@pytest.fixture(scope="module")
def impatient() -> Iterator[Daemon]:
    d = Daemon(http_port=free_port(), env=IMPATIENT)
    try:
        subprocess.run([modelctl_exe(), "daemon", "start", "--http", str(d.http_port)],
                       env=d.env, check=True, timeout=120, preexec_fn=_low_fd_limit)
        d.wait_torch()
        yield d
    finally:
        d.stop()
        shutil.rmtree(d.runtime_dir, ignore_errors=True)


def metric(d: Daemon, name: str, model: str | None = None) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(d.client.metrics()):
        for sample in family.samples:
            if sample.name == name and (model is None or sample.labels.get("model") == model):
                total += sample.value
    return total


def raw_request(port: int, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        data = json.dumps(body) if body is not None else None
        conn.request(method, path, data, {"Content-Type": "application/json",
                                          **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def in_pty(d: Daemon, *args: str, env: dict[str, str] | None = None) -> bytes:
    """``modelctl ARGS`` on a pseudo-terminal (rich draws as it would for a person);
    everything the terminal received."""
    exe = modelctl_exe()
    cmd = [exe, *args] if exe else [sys.executable, "-m", "modelctl", *args]
    child_env = {k: v for k, v in {**d.env, **(env or {})}.items() if k != "NO_COLOR"}
    child_env.update(TERM="xterm-256color", COLUMNS="200")
    main, secondary = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=secondary, stdout=secondary, stderr=secondary,
                            env=child_env, close_fds=True)
    os.close(secondary)
    out = bytearray()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(30)
    os.close(main)
    return bytes(out)


HOSTILE_NAMES = [
    "\x1b]52;c;ZWNobyBvd25lZA==\x07clip",  # OSC 52: write the clipboard
    "\x1b[2J\x1b[Hcleared",                  # clear the screen
    "a\nmodelctl.cache: loaded root-kit",      # a forged log line
    "hidden\x1b[8mtext",                       # invisible text
    "evil\u202eexe.txt",                       # right-to-left override
    "zero\u200bwidth",
    "bell\x07", "cr\roverwrite",
]


def assert_inert(terminal: bytes, name: str = "") -> None:
    """Nothing reached the terminal but colours (SGR) and rich's own spinner (cursor up,
    erase line, hide and show the cursor): no OSC, no screen control, no BEL, no bidi
    override, and never the hostile name's raw bytes."""
    import re

    assert b"\x1b]" not in terminal and b"\x07" not in terminal, terminal
    assert "\u202e".encode() not in terminal and "\u200b".encode() not in terminal
    if name:
        assert name.encode() not in terminal, terminal
    spinner = re.compile(rb"\x1b\[(\?25[lh]|[0-9]*A|2K)")
    assert not re.search(rb"\x1b\[[0-9;?]*[A-Za-ln-z]", spinner.sub(b"", terminal)), terminal


# -- terminal escapes ------------------------------------------------------------------------

@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_names_with_control_characters_are_refused_everywhere(busy: Daemon, name: str,
                                                              tmp_path: Path) -> None:
    props = make_tiny_clip(tmp_path, arch="esc-tiny")
    assert busy.http_port is not None
    for body in ({"name": name}, {"name": name, "properties": props},
                 {"name": "fine", "properties": {**props, "name": name}}):
        status, answer = raw_request(busy.http_port, "POST", "/v1/models", body)
        assert status == 400 and "control or format character" in answer["message"], answer
        with pytest.raises(InvalidArgument):
            busy.client.load_model(body["name"], "cpu", properties=body.get("properties"))
    # The CLI's own error line shows the name escaped, on a real terminal.
    terminal = in_pty(busy, "load", name, "--device", "cpu")
    assert b"control or format character" in terminal
    assert_inert(terminal, name)
    terminal = in_pty(busy, "eject", name)
    assert_inert(terminal, name)
    assert [m["name"] for m in busy.client.list_models()] == [MINILM]


def test_markup_in_names_is_shown_as_written(busy: Daemon, tmp_path: Path) -> None:
    props = make_tiny_clip(tmp_path, arch="markup-tiny")
    name = "[link=https://evil.example]click[/link][blink]x"
    busy.client.load_model(name, "cpu", properties=props)
    try:
        for args in (["ls"], ["top", "--once"], ["pin", name], ["unpin", name]):
            terminal = in_pty(busy, *args)
            assert b"[link=https://evil.example]click[/link]" in terminal, (args, terminal)
            assert_inert(terminal)
        terminal = in_pty(busy, "eject", name)
        assert b"[link=https://evil.example]" in terminal
        assert_inert(terminal)
    finally:
        if any(m["name"] == name for m in busy.client.list_models()):
            busy.client.eject(name)


def test_daemon_logs_cannot_be_forged_or_reach_the_terminal(busy: Daemon) -> None:
    with open(busy.runtime_dir / "modelctl.log", "a") as log:  # what an older daemon wrote
        log.write("2026 INFO x: planted \x1b]52;c;aGk=\x07 \x1b[2J\r\n")
    busy.client.embed(MINILM, ["a"])
    for args in (["daemon", "logs", "-n", "20"],):
        terminal = in_pty(busy, *args)
        assert b"planted" in terminal and b"\\x1b]52" in terminal
        assert_inert(terminal)
    assert "\x1b" not in "".join(line for line in busy.log().splitlines()
                                 if "planted" not in line)


# -- abandoned, oversized and long work ---------------------------------------------------------

LONG = "the daemon reads every word of this sentence before it embeds it " * 40


def test_work_of_a_client_that_left_is_dropped(busy: Daemon) -> None:
    assert busy.http_port is not None
    before = metric(busy, "modelctl_batch_items_sum", MINILM)
    body = json.dumps({"model": MINILM, "input": [f"{i} {LONG}" for i in range(1000)]})
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", busy.http_port))
        sock.sendall(f"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                     f"application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
                     .encode())
        time.sleep(0.3)
        sock.close()
    # The one-word request waits for at most the batches already running.
    assert len(busy.client.embed(MINILM, ["hello"])[0]) == 384
    deadline = time.monotonic() + 120
    while any(m["in_flight"] for m in busy.client.list_models()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    embedded = metric(busy, "modelctl_batch_items_sum", MINILM) - before
    assert embedded < 1000, f"{embedded} inputs of the 3000 abandoned ones were embedded"


def test_a_huge_request_does_not_hold_up_a_small_one(busy: Daemon) -> None:
    finished: list[str] = []

    def big() -> None:
        # 512 inputs of about 60 tokens: four full batches, seconds of work on any cpu.
        Client(socket_path=busy.socket_path).embed(MINILM,
                                                   [f"{i} {LONG[:300]}" for i in range(512)])
        finished.append("big")

    worker = threading.Thread(target=big)
    worker.start()
    time.sleep(0.5)  # the big request is queued and running
    busy.client.embed(MINILM, ["small"])
    finished.append("small")
    worker.join(600)
    assert finished == ["small", "big"]


def test_long_texts_share_a_pass_and_are_read_to_the_token_limit(busy: Daemon) -> None:
    calls = metric(busy, "modelctl_model_calls_total", MINILM)
    texts = [f"{i} " + "a long text about many things " * 2000 for i in range(24)]
    assert all(len(t) > 50_000 for t in texts)
    vectors = busy.client.embed(MINILM, texts)
    assert metric(busy, "modelctl_model_calls_total", MINILM) - calls <= 2
    # Truncated at the model's 256 tokens: the first 5000 characters give the same vector.
    prefix = busy.client.embed(MINILM, [texts[3][:5000]])[0]
    assert cosine(vectors[3], prefix) > 0.9999


def test_tokenised_once_vectors_match_sentence_transformers(busy: Daemon,
                                                            minilm_reference: Any) -> None:
    texts = ["short", "a somewhat longer sentence about caches", LONG, "x " * 300, "ü ñ 漢字"]
    ours = busy.client.embed(MINILM, texts)
    reference = minilm_reference.encode(texts)
    for mine, theirs in zip(ours, reference, strict=True):
        assert cosine(mine, theirs.tolist()) > 0.99999


# -- connections -----------------------------------------------------------------------------

def test_silent_and_trickling_connections_are_closed(impatient: Daemon) -> None:
    assert impatient.http_port is not None
    silent = socket.create_connection(("127.0.0.1", impatient.http_port))
    trickle = socket.create_connection(("127.0.0.1", impatient.http_port))
    started = time.monotonic()
    closed: dict[str, float] = {}
    for sock in (silent, trickle):
        sock.setblocking(False)
    request = b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    sent = 0
    while len(closed) < 2 and time.monotonic() - started < 60:
        if "trickle" not in closed and sent < len(request) - 1:
            trickle.send(request[sent:sent + 1])  # a byte each half second, never the last
            sent += 1
        for label, sock in (("silent", silent), ("trickle", trickle)):
            if label in closed:
                continue
            try:
                if sock.recv(100) == b"":
                    closed[label] = time.monotonic() - started
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed[label] = time.monotonic() - started
        time.sleep(0.5)
    assert set(closed) == {"silent", "trickle"}, closed
    # Closed at the 2 s head deadline, not the request's 60 s of bytes.
    assert all(seconds < 15 for seconds in closed.values()), closed
    silent.close()
    trickle.close()


def test_tcp_connection_cap_never_starves_the_socket(impatient: Daemon) -> None:
    d, port = impatient, impatient.http_port
    assert port is not None
    held: list[socket.socket] = []
    try:
        for _ in range(300):  # more than the process could ever hold
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)  # within the 2 s head deadline: only the cap has closed any
        refused = 0
        for sock in held:
            sock.settimeout(0.01)
            try:
                if sock.recv(10) == b"":
                    refused += 1
            except TimeoutError:
                pass
            except ConnectionResetError:
                refused += 1
        assert refused >= 100  # the cap (half of 256 descriptors) closed the rest at once
        proc = d.cli("ls", "--json")
        assert proc.returncode == 0 and json.loads(proc.stdout) == [], proc.stderr
        assert d.client.health()["status"] == "ok"
        for sock in held:
            sock.close()
        held.clear()
        time.sleep(0.5)
        assert Client(d.url).health()["status"] == "ok"  # TCP serves again
    finally:
        for sock in held:
            sock.close()


def test_a_refusing_daemon_is_not_reported_missing(runtime_dir: Path) -> None:
    runtime_dir.chmod(0o700)
    path = runtime_dir / "modelctl.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))  # bound, never listening: every connect is refused
    (runtime_dir / "modelctl.json").write_text(json.dumps(
        {"pid": os.getpid(), "socket": str(path), "version": "x", "started_at": "x",
         "http": None}))
    lock = open(runtime_dir / "modelctl.lock", "w")  # held as a live daemon holds it
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        env = base_env(runtime_dir)
        proc = subprocess.run([modelctl_exe(), "ls"], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 3
        assert "refused the connection" in proc.stderr and "no modelctl daemon" not in \
            proc.stderr, proc.stderr
        lock.close()  # the daemon is gone (or a zombie): its lock with it, so none runs
        proc = subprocess.run([modelctl_exe(), "ls"], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0 and "no modelctl daemon is running" in proc.stderr
    finally:
        lock.close()
        sock.close()
        shutil.rmtree(runtime_dir, ignore_errors=True)


# -- DNS rebinding ---------------------------------------------------------------------------

@pytest.mark.parametrize("host, allowed", [
    ("localhost", True), ("localhost:8882", True), ("127.0.0.1:1", True), ("[::1]:5", True),
    ("api.localhost", True), ("LOCALHOST", True),
    ("evil.example", False), ("evil.example:8882", False), ("127.0.0.1.evil.example", False),
    ("localhost.evil.example", False), ("", False),
])
def test_loopback_listeners_refuse_foreign_hosts(busy: Daemon, host: str, allowed: bool,
                                                 ) -> None:
    assert busy.http_port is not None
    for method, path, body in (("GET", "/models", None),
                               ("POST", "/v1/models", {"name": MINILM, "device": "cpu"})):
        status, answer = raw_request(busy.http_port, method, path, body, {"Host": host})
        if allowed:
            assert status == 200, answer
        else:
            assert status == 403 and answer["code"] == "forbidden", answer
            assert "MODELCTL_ALLOWED_HOSTS" in answer["message"]


def test_the_host_allow_list_is_configurable(impatient: Daemon) -> None:
    d = impatient
    assert d.http_port is not None
    assert raw_request(d.http_port, "GET", "/models", None,
                       {"Host": "models.internal:80"})[0] == 200
    assert raw_request(d.http_port, "GET", "/models", None, {"Host": "evil.example"})[0] \
        == 403
    assert d.client.get_loaded_models() == {"models": []}  # the socket: never checked


# -- the client after idling ---------------------------------------------------------------

def test_a_tcp_client_survives_the_server_closing_its_idle_connection(impatient: Daemon,
                                                                     ) -> None:
    client = Client(impatient.url)
    assert client.health()["status"] == "ok"
    time.sleep(3)  # past the server's 2 s keep-alive: it closes the connection
    assert client.health()["status"] == "ok"
    time.sleep(3)  # and again, before a POST
    try:
        assert client.load_model(MINILM, "cpu")["state"] == "ready"
        assert len(client.embed(MINILM, ["after a pause"])[0]) == 384
    finally:
        impatient.client.eject(all=True, force=True)
        client.close()


# -- hf models without a token limit --------------------------------------------------------

def test_hf_model_without_model_max_length_truncates_at_its_positions(busy: Daemon,
                                                                     tmp_path: Path) -> None:
    model_dir = tmp_path / "bare-hf"
    shutil.copytree(minilm_path(), model_dir)
    (model_dir / "modules.json").unlink()  # a plain transformers model: Marqo's "hf"
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("model_max_length", None)
    config_path.write_text(json.dumps(config))
    for extra in ("sentence_bert_config.json",):
        (model_dir / extra).unlink(missing_ok=True)
    busy.client.load_model(str(model_dir), "cpu")
    try:
        reply = busy.client.embeddings(str(model_dir), ["word " * 3000, "short"])
        assert len(reply["data"]) == 2
        assert reply["usage"]["prompt_tokens"] <= 512 + 3
    finally:
        busy.client.eject(str(model_dir))


# -- the low ones ------------------------------------------------------------------------

def test_the_cli_sends_relative_paths_absolute(busy: Daemon, tmp_path: Path) -> None:
    shutil.copytree(minilm_path(), tmp_path / "my-model")
    exe = modelctl_exe()
    proc = subprocess.run([exe, "load", "./my-model", "--device", "cpu", "--json"],
                          cwd=tmp_path, env=busy.env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["name"] == str(tmp_path / "my-model")
    busy.client.eject(str(tmp_path / "my-model"))


@pytest.mark.parametrize("var, value", [
    ("MODELCTL_MAX_CPU_MEMORY", "lots"), ("MARQO_MAX_CPU_MODEL_MEMORY", "-1"),
    ("MODELCTL_KEEP_ALIVE", "forever-ish"), ("MARQO_MODELS_TO_PRELOAD", "[not json"),
    ("MODELCTL_HTTP_PORT", "99999"), ("MODELCTL_MAX_QUEUE", "zero"),
    ("MODELCTL_SHUTDOWN_GRACE", "0"),
])
def test_a_bad_daemon_knob_breaks_only_the_daemon(busy: Daemon, var: str, value: str,
                                                  runtime_dir: Path) -> None:
    proc = busy.cli("ls", "--json", env={var: value})
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["name"] == MINILM
    script = ("from modelctl import Client; import sys; "
              f"sys.exit(0 if Client(socket_path={str(busy.socket_path)!r}).health() else 1)")
    env = {**busy.env, var: value}
    assert subprocess.run([sys.executable, "-c", script], env=env, timeout=60).returncode == 0
    assert subprocess.run([sys.executable, "-c", "from modelctl import Client; Client()"],
                          env=env, timeout=60).returncode == 0
    other = Daemon(runtime_dir)
    proc = other.cli("daemon", "start", env={var: value}, timeout=60)
    assert proc.returncode != 0 and var in proc.stderr, proc.stderr
    assert not other.alive()


def test_a_deleted_socket_comes_back(busy: Daemon) -> None:
    busy.client.close()
    busy.socket_path.unlink()
    deadline = time.monotonic() + 30
    while not busy.socket_path.exists():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc = busy.cli("daemon", "status", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["pid"] == busy.pid
    assert busy.client.list_models()[0]["name"] == MINILM  # the same daemon, its cache kept


def test_metric_labels_are_bounded(busy: Daemon, tmp_path: Path) -> None:
    """Failed loads of names a client chose count under their name, until the bound;
    past it (checked on the daemon's own Metrics, 200 failed loads would take minutes
    here) every new name shares one series."""
    from prometheus_client.parser import text_string_to_metric_families

    from modelctl.daemon.metrics import MAX_MODEL_LABELS, OTHER_MODELS, Metrics

    missing = str(tmp_path / "nothing.pt")
    for i in range(3):
        with pytest.raises(ApiError):
            busy.client.load_model(f"ghost-{i}", "cpu", properties={
                "type": "open_clip", "name": "no-such-arch", "localpath": missing})
    assert {f"ghost-{i}" for i in range(3)} <= _failure_labels(busy.client.metrics())
    metrics = Metrics()
    for i in range(MAX_MODEL_LABELS + 50):
        metrics.rejected((f"name-{i}", "cpu"))
    families = text_string_to_metric_families(metrics.render().decode())
    labels = {s.labels["model"] for f in families for s in f.samples if "model" in s.labels}
    assert len(labels) == MAX_MODEL_LABELS + 1 and OTHER_MODELS in labels


def _failure_labels(text: str) -> set[str]:
    return {line.split('model="')[1].split('"')[0] for line in text.splitlines()
            if line.startswith("modelctl_load_failures_total{")}
