"""Hostile clients and broken files cannot hurt the host: memory, decoders, paths, weights.

Every case goes through a real daemon. The memory cases run under a watchdog that
kills the daemon past ``WATCHDOG_BYTES`` of RSS, so a regression fails the test
instead of taking the machine down.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelctl.errors import ApiError, CacheManagementError, InvalidArgument, PayloadTooLarge
from modelctl.testing import (
    MINILM,
    Daemon,
    cosine,
    daemon_rss,
    make_tiny_clip,
    minilm_path,
    png_bytes,
)

WATCHDOG_BYTES = 3 * 2**30
CLIP = "host-clip"


class Watchdog:
    """Polls a process's RSS; SIGKILLs it past ``limit`` and remembers the peak."""

    def __init__(self, pid: int, limit: int = WATCHDOG_BYTES) -> None:
        self.pid, self.limit = pid, limit
        self.peak = 0
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = daemon_rss(self.pid)
            except (OSError, AssertionError):
                return
            self.peak = max(self.peak, rss)
            if rss > self.limit:
                self.fired = True
                os.kill(self.pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def host(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The shared daemon (a fake ``gs`` on its PATH: conftest's ``gs_marker``) with a tiny
    CLIP loaded, and nothing else, for this module."""
    props = make_tiny_clip(tmp_path_factory.mktemp("host-clip"), arch="host-tiny")
    daemon.client.eject(all=True, force=True)
    daemon.client.load_model(CLIP, "cpu", properties=props)
    yield daemon
    daemon.client.eject(all=True, force=True)


def uri(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def bilevel_png(size: int = 6000) -> bytes:
    """A few KB of PNG that decodes to ``size``² pixels (144 MB in RGB at 6000)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (size, size)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def raw_post(d: Daemon, path: str, body: dict[str, Any],
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    import http.client

    assert d.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=300)
    try:
        conn.request("POST", path, json.dumps(body),
                     {"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


# -- decoded-image memory ----------------------------------------------------------------

def test_many_small_pngs_that_decode_huge_are_413_naming_the_limit(host: Daemon) -> None:
    bomb = uri(bilevel_png())
    assert len(bomb) < 10_000
    pid = host.pid
    assert pid is not None
    with Watchdog(pid) as dog:
        for copies in (100, 30, 3):
            with pytest.raises(PayloadTooLarge) as info:
                host.http_client().embed(CLIP, [bomb] * copies)
            assert "100000000 per request" in info.value.message
            assert "MODELCTL_MAX_REQUEST_PIXELS" in info.value.message
        # Within the per-request limit, concurrent requests share the in-flight limit.
        results: list[Any] = []

        def two_images() -> None:
            try:
                results.append(len(host.http_client().embed(CLIP, [bomb, bomb])))
            except ApiError as exc:
                results.append(exc)

        workers = [threading.Thread(target=two_images) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)
    assert not dog.fired, f"the daemon passed {WATCHDOG_BYTES} bytes (peak {dog.peak})"
    assert results == [2, 2, 2, 2]
    assert dog.peak < 2 * 2**30
    assert host.alive()


def test_images_are_decoded_in_passes_with_the_same_vectors(host: Daemon) -> None:
    red, blue = uri(png_bytes((200, 30, 30))), uri(png_bytes((30, 30, 200)))
    alone = host.client.embed(CLIP, [red])[0]
    mixed = host.client.embed(CLIP, [blue, "a red square", red])
    assert cosine(alone, mixed[2]) > 0.9999
    assert cosine(mixed[0], mixed[2]) < 0.9999


# -- decoders ----------------------------------------------------------------------------

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
       b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")


def test_pillow_would_run_gs_on_this_eps(gs_marker: Path, monkeypatch: pytest.MonkeyPatch,
                                         ) -> None:
    """The payload of the next test is one Pillow hands to Ghostscript when allowed to."""
    from PIL import EpsImagePlugin, Image

    monkeypatch.setenv("PATH", f"{gs_marker.parent}:{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None, raising=False)
    with pytest.raises(Exception):  # noqa: B017 (our gs exits 1: any failure will do)
        Image.open(io.BytesIO(EPS)).load()
    assert gs_marker.exists()
    gs_marker.unlink()


@pytest.mark.parametrize("kind", ["png", "eps", "postscript"])
def test_postscript_is_400_and_never_reaches_ghostscript(host: Daemon, gs_marker: Path,
                                                         kind: str) -> None:
    for client in (host.client, host.http_client()):
        with pytest.raises(ApiError) as info:
            client.embed(CLIP, [uri(EPS, kind)])
        assert info.value.status == 400
        assert "PNG, JPEG, WEBP, GIF, BMP" in info.value.message
    assert not gs_marker.exists()


def _malformed() -> dict[str, bytes]:
    good = png_bytes()
    spider_header = bytearray(1024)
    for i, value in enumerate((1.0, 10.0, 0.0, 0.0, 1.0, 10.0)):  # nslice, nrow, ...
        spider_header[i * 4:i * 4 + 4] = __import__("struct").pack(">f", value)
    return {
        "truncated-png": good[:60],
        "png-bad-ihdr": good[:16] + b"\xff" * 8 + good[24:],
        "png-bad-data": good[:40] + b"\x00" * (len(good) - 40),
        "jpeg-header-only": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01"
                            b"\x00\x00\xff\xd9",
        "gif-garbage": b"GIF89a" + b"\xff" * 40,
        "bmp-truncated": b"BM" + b"\x00" * 12 + b"\x28\x00\x00\x00" + b"\x64\x00\x00\x00" * 2
                           + b"\x01\x00\x18\x00" + b"\x00" * 24,
        "webp-truncated": b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8,
        "tiff": b"II*\x00\x08\x00\x00\x00\xff\xff" + b"\x00" * 64,
        "dds": b"DDS |\x00\x00\x00" + b"\xff" * 120,
        "spider": bytes(spider_header),
        "im": b"Image type: RGB image\r\nName: x\r\nImage size (x*y): 99999*99999\r\n\x1a"
              + b"\x00" * 600,
        "ico": b"\x00\x00\x01\x00\x01\x00" + b"\xff" * 40,
        "psd": b"8BPS\x00\x01" + b"\x00" * 40,
        "empty": b"",
    }


@pytest.mark.parametrize("name", sorted(_malformed()))
def test_malformed_or_foreign_images_are_400(host: Daemon, name: str) -> None:
    payload = uri(_malformed()[name])
    status, body = raw_post(host, "/v1/embeddings", {"model": CLIP, "input": [payload]})
    assert status == 400, body
    assert body["code"] in ("bad_request", "invalid_argument") and "input 0" in body["message"]


def test_decoders_left_nothing_behind(host: Daemon, gs_marker: Path) -> None:
    assert host.alive() and not gs_marker.exists()
    assert "Traceback" not in host.log()
    assert len(host.client.embed(CLIP, [uri(png_bytes())])[0]) == 32


# -- paths over TCP ------------------------------------------------------------------------

SPELLINGS = ["{p}", "local-dir:{p}", "open_clip/local-dir:{p}", "LOCAL-DIR:{p}",
             "hf-hub:{p}", "file://{p}", "file:{p}", "open_clip/hf-hub:{p}"]
RELATIVE = ["./{r}", "../{r}", "~/{r}", "hf-hub:../{r}", "local-dir:{r}",
            "open_clip/local-dir:./{r}", "hf-hub:org/../../{r}"]


def _answer(d: Daemon, body: dict[str, Any], path: str) -> tuple[int, str]:
    status, answer = raw_post(d, "/v1/models", body)
    return status, json.dumps(answer).replace(path, "<PATH>")


def test_tcp_answers_every_path_spelling_alike_whether_it_exists(host: Daemon,
                                                                 tmp_path: Path) -> None:
    real = tmp_path / "weights"
    shutil.copytree(minilm_path(), real)
    missing = tmp_path / "nothing-here"
    answers = set()
    for spelling in SPELLINGS + RELATIVE:
        for target in (str(real), str(missing)):
            rel = os.path.relpath(target, os.getcwd()) if "{r}" in spelling else ""
            name = spelling.format(p=target, r=rel)
            shown = rel or target
            for body in ({"name": name},
                         {"name": "custom-x", "properties": {"type": "open_clip",
                                                             "name": name}},
                         {"name": "custom-y", "properties": {"type": "sbert", "name": name}}):
                status, answer = _answer(host, body, shown)
                assert status == 400, (name, answer)
                assert "only over the Unix socket" in answer
                answers.add((spelling, json.dumps(body["properties"]["type"])
                             if "properties" in body else "", answer))
    # Same answer for the real and the missing directory: one per spelling and shape.
    assert len(answers) == len(SPELLINGS + RELATIVE) * 3
    assert [m["name"] for m in host.client.list_models()] == [CLIP]


def test_the_socket_takes_local_dir_but_not_relative_paths(host: Daemon, tmp_path: Path,
                                                           ) -> None:
    with pytest.raises(InvalidArgument, match="absolute path"):
        host.client.load_model("./some-model", "cpu")
    with pytest.raises(InvalidArgument, match="absolute path"):
        host.client.load_model("x", "cpu", properties={"type": "sbert", "name": "local-dir:m"})


# -- registry names ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", MINILM, "hf/all-MiniLM-L6-v2",
                                  "ViT-B/32", "hf/e5-base-v2"])
def test_custom_models_cannot_take_registry_names(host: Daemon, name: str,
                                                  tmp_path_factory: pytest.TempPathFactory,
                                                  ) -> None:
    props = make_tiny_clip(tmp_path_factory.mktemp("impostor"), arch="impostor-tiny")
    for client in (host.client, host.http_client()):
        with pytest.raises(InvalidArgument, match="reserved for registry models"):
            client.load_model(name, "cpu", properties=props)
    assert [m["name"] for m in host.client.list_models()] == [CLIP]


# -- weights -------------------------------------------------------------------------------

def _config_only(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(
        "*.safetensors", "*.bin", "*.pt", "*.onnx", "onnx", "openvino"))
    return target


def test_a_directory_without_weights_fails_naming_the_file(host: Daemon, tmp_path: Path,
                                                           ) -> None:
    partial = _config_only(Path(minilm_path()), tmp_path / "partial")
    assert (partial / "config.json").exists()
    with pytest.raises(InvalidArgument) as info:
        host.client.load_model(str(partial), "cpu")
    assert "model.safetensors" in info.value.message and str(partial) in info.value.message
    oc_dir = tmp_path / "oc"
    oc_dir.mkdir()
    (oc_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}))
    with pytest.raises(InvalidArgument, match="open_clip_model.safetensors"):
        host.client.load_model(f"local-dir:{oc_dir}", "cpu")
    assert [m["name"] for m in host.client.list_models()] == [CLIP]


def _snapshot(cache: Path, repo: str, revision: str, files_from: Path | None) -> Path:
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / revision
    if files_from is None:
        snap.mkdir(parents=True)
    else:
        shutil.copytree(files_from, snap)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snap


def test_partial_cache_snapshots_never_load_random_weights(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    repo = "sentence-transformers/all-MiniLM-L12-v2"  # not packaged: the cache decides
    good = _snapshot(cache, repo, "a" * 40, Path(minilm_path()))
    os.utime(good, (1, 1))
    partial = _config_only(Path(minilm_path()), tmp_path / "cfg")
    _snapshot(cache, repo, "b" * 40, partial)  # refs/main: the interrupted download
    lone = "sentence-transformers/multi-qa-MiniLM-L6-cos-v1"
    _snapshot(cache, lone, "c" * 40, partial)
    # MiniLM's partial snapshot too: the packaged weights still win.
    _snapshot(cache, MINILM, "d" * 40, partial)
    with Daemon(env={"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path)}) as d:
        reference = d.client.embed(MINILM, ["a sentence about weights"])[0]
        twice = [d.client.embed(repo, ["a sentence about weights"])[0]]
        d.client.eject(repo)
        twice.append(d.client.embed(repo, ["a sentence about weights"])[0])
        assert cosine(twice[0], twice[1]) > 0.9999  # the complete snapshot, both times
        assert cosine(twice[0], reference) > 0.9999  # (it holds MiniLM-L6's files)
        with pytest.raises(InvalidArgument) as info:
            d.client.load_model(lone, "cpu")
        assert "lacks the weights" in info.value.message
        assert "model.safetensors" in info.value.message
        assert {m["name"] for m in d.client.list_models()} == {MINILM, repo}


# -- budget before loading -----------------------------------------------------------------

def test_an_architecture_over_the_budget_is_409_before_any_memory(host: Daemon) -> None:
    """ViT-bigG-14 (2.5 G parameters, about 10 GB in fp32) against the shared daemon's
    6 GiB: refused from its architecture, whether its tag is published or not, before a
    byte of it is allocated or fetched."""
    pid = host.pid
    assert pid is not None
    before = daemon_rss(pid)
    held = {m["name"] for m in host.client.list_models()}
    with Watchdog(pid) as dog:
        for name in ("open_clip/ViT-bigG-14/not-a-published-tag",
                     "open_clip/ViT-bigG-14/laion2b_s39b_b160k"):
            started = time.monotonic()
            with pytest.raises(CacheManagementError) as info:
                host.client.load_model(name, "cpu")
            assert "budget 6.0 GiB" in info.value.message, info.value.message
            assert "needs about" in info.value.message
            assert time.monotonic() - started < 60
    assert not dog.fired and dog.peak < before + 512 * 2**20
    assert {m["name"] for m in host.client.list_models()} == held
    # A model that fits still loads under the same budget.
    assert host.client.load_model(MINILM, "cpu")["state"] == "ready"
    host.client.eject(MINILM)
