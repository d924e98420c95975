"""Marqo's ``url`` property over http(s): fetched once into the cache, then read from
disk; over TCP only with the operator's consent (refusal without it: test_security.py).

Real HTTP on loopback serves a real checkpoint and a real archive of the packaged
MiniLM; the vectors are compared with the same weights loaded from a local path.
"""

from __future__ import annotations

import functools
import http.server
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelctl.errors import ModelctlError, WeightsNotFound
from modelctl.testing import Daemon, free_port, make_tiny_clip, minilm_path


class _Files(http.server.SimpleHTTPRequestHandler):
    """Serves one directory; counts GETs per path; /moved redirects to a file: URL."""

    hits: dict[str, int] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("served")
    handler = functools.partial(_Files, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def consenting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    # Not offline (that refuses every download); it loads nothing from the hub.
    d = Daemon(http_port=free_port(), env={"MODELCTL_ALLOW_URL_DOWNLOADS": "1",
                                           "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"})
    d.start()
    try:
        d.wait_torch()
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, served: tuple[str, Path],
         consenting: Daemon) -> dict[str, Any]:
    """The tiny open_clip checkpoint, loaded once from its path (which also teaches the
    daemon its architecture, defined by the JSON beside it) and served over HTTP."""
    props = make_tiny_clip(tmp_path_factory.mktemp("url-clip"), arch="url-tiny")
    consenting.client.load_model("url-tiny-local", "cpu", properties=props)
    base, root = served
    (root / "url-tiny.pt").write_bytes(Path(props["localpath"]).read_bytes())
    return {**{k: v for k, v in props.items() if k != "localpath"},
            "url": f"{base}/url-tiny.pt"}


def _cosines(a: list[list[float]], b: list[list[float]]) -> np.ndarray:
    x, y = np.asarray(a), np.asarray(b)
    return np.sum(x * y, axis=1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)


def test_a_checkpoint_url_is_fetched_once_and_gives_the_same_vectors(
        consenting: Daemon, tiny: dict[str, Any]) -> None:
    c = consenting.client
    entry = c.load_model("url-tiny", "cpu", properties=tiny)
    assert entry["properties"]["url"] == tiny["url"]
    texts = ["a photo of a cat", "a diagram of a socket"]
    assert _cosines(c.embed("url-tiny", texts), c.embed("url-tiny-local", texts)).min() > 0.9999
    assert _Files.hits["/url-tiny.pt"] == 1
    c.eject("url-tiny", "cpu")
    c.load_model("url-tiny", "cpu", properties=tiny)  # from the cache: no second request
    assert _Files.hits["/url-tiny.pt"] == 1
    downloads = list((consenting.runtime_dir / "cache" / "downloads").rglob("*"))
    assert [p.name for p in downloads if p.is_file()] == ["url-tiny.pt"]


def test_tcp_clients_may_fetch_when_the_operator_allows(consenting: Daemon,
                                                        tiny: dict[str, Any]) -> None:
    tcp = consenting.http_client()
    entry = tcp.load_model("url-tiny-tcp", "cpu", properties=tiny)
    assert entry["name"] == "url-tiny-tcp" and entry["dimensions"] == tiny["dimensions"]
    assert len(tcp.embed("url-tiny-tcp", ["hello"])[0]) == tiny["dimensions"]
    # Paths stay the socket's privilege even so.
    with pytest.raises(ModelctlError, match="Unix socket"):
        tcp.load_model("url-tiny-file", "cpu", properties={
            **tiny, "url": f"file://{consenting.runtime_dir}"})


def test_failed_downloads_leave_nothing_behind(consenting: Daemon, tiny: dict[str, Any],
                                               served: tuple[str, Path]) -> None:
    base, _ = served
    c = consenting.client
    before = [(m["name"], m["device"]) for m in c.list_models()]
    for url, why in ((f"{base}/missing.pt", "404"), (f"{base}/moved", "(?i)redirect"),
                     ("http://127.0.0.1:9/refused.pt", "could not download")):
        with pytest.raises(ModelctlError, match=why):
            c.load_model("url-broken", "cpu", properties={**tiny, "url": url})
    with pytest.raises(ModelctlError, match="credentials"):
        c.load_model("url-broken", "cpu", properties={
            **tiny, "url": "http://user:pw@127.0.0.1/x.pt"})
    assert [(m["name"], m["device"]) for m in c.list_models()] == before
    leftovers = [p.name for p in (consenting.runtime_dir / "cache" / "downloads").rglob("*")
                 if p.is_file() and p.name != "url-tiny.pt"]
    assert leftovers == []
    assert consenting.alive()


def test_an_archive_url_is_marqos_model_directory(tmp_path: Path, served: tuple[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """sbert and hf models: ``url`` names an archive of the model's directory."""
    from sentence_transformers import SentenceTransformer

    from modelctl.daemon import loaders
    from modelctl.daemon.loaders.downloads import downloaded

    monkeypatch.setenv("MODELCTL_CACHE_DIR", str(tmp_path / "cache"))
    base, root = served
    with tarfile.open(root / "minilm.tar", "w") as tar:
        tar.add(minilm_path(), arcname="minilm")
    props = {"type": "sbert", "url": f"{base}/minilm.tar", "dimensions": 384, "tokens": 128}
    spec = loaders.spec_for("archived-url", props, local_paths=True)
    model = loaders.load(spec, "cpu", offline=False)
    try:
        texts = ["hello world", "a cat sat on the mat"]
        got, _ = model.encode_texts(texts, None)
    finally:
        model.release()
    reference = SentenceTransformer(minilm_path(), device="cpu")
    reference.max_seq_length = 128
    want = reference.encode(texts, normalize_embeddings=True)
    assert _cosines(got.tolist(), want.tolist()).min() > 0.9999
    # Offline, the copy fetched above is used; what was never fetched is refused.
    assert downloaded(props["url"], offline=True).is_file()
    with pytest.raises(WeightsNotFound, match="offline"):
        downloaded(f"{base}/never.tar", offline=True)
