"""``modelctl pull``: weights from a hub into the Hugging Face cache, and then offline use.

A local HTTP server stands in for the hub (``HF_ENDPOINT``), serving the few routes
``huggingface_hub`` downloads through: repo info, the file tree, and each file (HEAD and
GET). It serves a tiny sentence-transformers model the test builds, under a registry
name's repo, so a daemon with no network can then load what ``pull`` fetched.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelctl.testing import Daemon, free_port, minilm_path

REPO_ID = "sentence-transformers/all-MiniLM-L12-v2"  # the registry's all-MiniLM-L12-v2
NEVER_PULLED = ("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2")  # name, repo
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """The hub's download API for the repos in ``files`` (repo id -> {path: bytes})."""

    def __init__(self, files: dict[str, dict[str, bytes]]) -> None:
        self.files = files
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.requests.append(f"HEAD {self.path}")
                self._file(body=False)

            def do_GET(self) -> None:
                hub.requests.append(f"GET {self.path}")
                path = self.path.split("?", 1)[0]
                if path.startswith("/api/models/"):
                    self._api(path[len("/api/models/"):])
                else:
                    self._file(body=True)

            def _api(self, rest: str) -> None:
                for repo, files in hub.files.items():
                    if rest in (repo, f"{repo}/revision/main"):
                        return self._json({"id": repo, "sha": COMMIT, "siblings": [
                            {"rfilename": name} for name in files]})
                    if rest.startswith(f"{repo}/tree/"):
                        return self._json([
                            {"type": "file", "path": name, "size": len(data),
                             "oid": hashlib.sha1(data).hexdigest()}
                            for name, data in files.items()])
                self._json({"error": "Repository not found"}, 404)

            def _file(self, body: bool) -> None:
                # /{repo}/resolve/{revision}/{path}
                repo, _, rest = self.path.split("?", 1)[0].lstrip("/").partition("/resolve/")
                name = rest.partition("/")[2]
                data = hub.files.get(repo, {}).get(name)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _json(self, value: Any, status: int = 200) -> None:
                raw = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tiny_sbert(directory: Path) -> dict[str, bytes]:
    """A sentence-transformers model of one small BERT layer (MiniLM's tokenizer), saved.

    A dense layer brings its vectors to the registry's 384 dimensions for the name it is
    served under: the daemon checks a registry model's dimensions after loading it."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    bert_dir = directory / "bert"
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128)
    BertModel(config).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    word = models.Transformer(str(bert_dir), max_seq_length=64)
    model = SentenceTransformer(modules=[word, models.Pooling(32), models.Dense(32, 384)])
    out = directory / "model"
    model.save(str(out))
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return tiny_sbert(tmp_path_factory.mktemp("tiny-sbert"))


@pytest.fixture
def hub(model_files: dict[str, bytes]) -> Iterator[FakeHub]:
    fake = FakeHub({REPO_ID: model_files})
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with no network and a Hugging Face cache of its own (``HF_HOME``), empty
    but for what a test pulls into it."""
    hf_home = tmp_path_factory.mktemp("offline") / "hf"
    with Daemon(env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}) as d:
        yield d


def pull(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelctl", "pull", *args],
                          env=env, capture_output=True, text=True, timeout=300)


def online_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODELCTL_", "HF_", "TRANSFORMERS_OFFLINE"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), NO_COLOR="1",
               MODELCTL_RUNTIME_DIR=str(tmp_path / "rt"), HF_HUB_DISABLE_TELEMETRY="1")
    return env


def test_pull_fetches_a_registry_model_that_then_loads_offline(
        tmp_path: Path, hub: FakeHub, model_files: dict[str, bytes], offline: Daemon) -> None:
    hf_home = Path(offline.env["HF_HOME"])  # where the offline daemon looks
    env = {**online_env(tmp_path, hub.url), "HF_HOME": str(hf_home)}
    result = pull("all-MiniLM-L12-v2", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["repo"] == REPO_ID and report["files"] == len(model_files)
    assert report["bytes"] == sum(len(d) for d in model_files.values())
    snapshot = Path(report["path"])
    assert snapshot.is_relative_to(hf_home / "hub")
    for name, data in model_files.items():  # byte for byte what the hub served
        assert (snapshot / name).read_bytes() == data
    assert any(r.startswith("GET /api/models/" + REPO_ID) for r in hub.requests)
    assert not (tmp_path / "rt" / "modelctl.sock").exists()  # pull loads nothing

    # A daemon with no network finds the weights in that cache, loads and embeds.
    entry = offline.client.load_model("all-MiniLM-L12-v2", "cpu")
    try:
        assert entry["dimensions"] == 384
        [vector] = offline.client.embed("all-MiniLM-L12-v2", ["pulled, then loaded offline"])
        assert len(vector) == 384
        registry = {r["name"]: r for r in offline.client.registry()}
        assert registry[REPO_ID]["available_offline"] is True
    finally:
        offline.client.eject("all-MiniLM-L12-v2")


def test_pull_shows_progress_and_a_summary(tmp_path: Path, hub: FakeHub) -> None:
    result = pull("all-MiniLM-L12-v2", env=online_env(tmp_path, hub.url))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("all-MiniLM-L12-v2: pulled ")
    assert "%" in result.stderr  # the hub client's progress bar, on stderr


def test_pull_offline_fails_at_once(tmp_path: Path, hub: FakeHub) -> None:
    env = {**online_env(tmp_path, hub.url), "HF_HUB_OFFLINE": "1"}
    result = pull("all-MiniLM-L12-v2", env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert "offline mode is on (HF_HUB_OFFLINE is set)" in result.stderr
    assert hub.requests == []  # it did not even try


def test_pull_with_the_hub_unreachable_says_so(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = pull("all-MiniLM-L12-v2", env=online_env(tmp_path, endpoint))
    assert result.returncode == 1
    assert f"the Hugging Face hub ({endpoint}) cannot be reached" in result.stderr


def test_pull_of_an_unknown_name_suggests_the_right_one(tmp_path: Path, hub: FakeHub) -> None:
    result = pull("all-minilm-l12-v2", env=online_env(tmp_path, hub.url))
    assert result.returncode == 1
    assert "did you mean 'all-MiniLM-L12-v2'?" in result.stderr
    assert hub.requests == []


def test_pull_of_the_packaged_model_downloads_nothing(tmp_path: Path, hub: FakeHub) -> None:
    result = pull("all-MiniLM-L6-v2", env=online_env(tmp_path, hub.url))
    assert result.returncode == 0, result.stderr
    assert "ship in a package, nothing to pull" in result.stdout
    assert hub.requests == []


def test_pull_of_an_open_clip_tag_fetches_its_checkpoint(tmp_path: Path) -> None:
    import open_clip

    name = "open_clip/ViT-B-32/laion2b_s34b_b79k"
    hub_path = open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")["hf_hub"]
    repo = hub_path.rstrip("/")
    checkpoint = b"not really a checkpoint, but the file the tag names"
    fake = FakeHub({repo: {"open_clip_model.safetensors": checkpoint}})
    try:
        result = pull(name, "--json", env=online_env(tmp_path, fake.url))
    finally:
        fake.close()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["repo"] == repo and report["files"] == 1
    assert Path(report["path"]).read_bytes() == checkpoint


def test_missing_weights_name_commands_that_exist(offline: Daemon) -> None:
    name, repo = NEVER_PULLED
    result = offline.cli("load", name, "--device", "cpu")
    assert result.returncode == 1
    assert "`modelctl pull` with the model's name" in result.stderr
    assert f"`hf download {repo}`" in result.stderr
    assert "huggingface-cli" not in result.stderr
    # The command the message names is the installed huggingface_hub's (its `hf` script).
    usage = subprocess.run([sys.executable, "-m", "huggingface_hub.cli.hf", "download",
                            "--help"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0 and "REPO_ID" in usage.stdout
