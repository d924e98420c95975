"""Preload from MODELCTL_PRELOAD and MARQO_MODELS_TO_PRELOAD: loaded after the socket is
up, listed as loading until ready, and a failing item is visible and not fatal."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from modelctl.testing import MINILM, Daemon


def wait_preloaded(d: Daemon, timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        status: list[dict[str, Any]] = d.client.health()["preload"]
        if status and all(item["state"] != "loading" for item in status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"preload did not finish: {status}")
        time.sleep(0.1)


def test_modelctl_preload_with_a_failing_item(runtime_dir: Path) -> None:
    d = Daemon(runtime_dir, env={
        "MODELCTL_PRELOAD": json.dumps([MINILM, "no-such-model"])})
    try:
        # The daemon-wide keep-alive given as a flag applies to preloaded models too.
        d.cli("daemon", "start", "--keep-alive", "30m", check=True, timeout=60)
        # The socket answers before torch is imported: the preload is listed, loading.
        first = json.loads(d.cli("ls", "--json", check=True).stdout)
        assert [(m["name"], m["device"], m["state"]) for m in first] == [
            (MINILM, "cpu", "loading")]
        assert first[0]["bytes"] is None

        status = {item["name"]: item for item in wait_preloaded(d)}
        assert status[MINILM] == {"name": MINILM, "device": "cpu", "state": "ready",
                                  "error": None}
        failed = status["no-such-model"]
        assert failed["state"] == "failed" and "unknown model" in failed["error"]

        [entry] = d.client.list_models()
        assert entry["state"] == "ready" and entry["bytes"] > 20_000_000
        assert entry["keep_alive"] == 1800.0 and entry["expires_at"] is not None
        assert d.alive() and d.client.health()["status"] == "ok"
        assert "preloading no-such-model failed" in d.log()
        assert len(d.client.embed(MINILM, ["preloaded and ready"])[0]) == 384
    finally:
        d.stop()


def test_marqo_preload_with_model_properties(runtime_dir: Path,
                                             tiny_clip: dict[str, Any]) -> None:
    broken = {**tiny_clip, "localpath": str(runtime_dir / "missing.pt")}
    d = Daemon(runtime_dir, env={
        "MARQO_MODELS_TO_PRELOAD": json.dumps([
            {"model": "pre-clip", "modelProperties": tiny_clip},
            "all-MiniLM-L6-v2",
            {"model": "broken-clip", "modelProperties": broken}]),
        "MODELCTL_KEEP_ALIVE": "1s"})
    try:
        d.start(wait_torch=False)
        status = {item["name"]: item for item in wait_preloaded(d)}
        assert status["pre-clip"]["state"] == "ready"
        assert status["all-MiniLM-L6-v2"]["state"] == "ready"
        assert status["broken-clip"]["state"] == "failed"
        assert "broken-clip" in status["broken-clip"]["error"]
        assert d.alive()

        # MODELCTL_KEEP_ALIVE=1s is every model's default: idle preloads expire.
        deadline = time.monotonic() + 20
        while d.client.list_models():
            assert time.monotonic() < deadline, d.client.list_models()
            time.sleep(0.1)
        families = {m.name: m for m in text_string_to_metric_families(d.client.metrics())}
        expired = {s.labels["model"] for s in families["modelctl_expirations"].samples
                   if s.name.endswith("_total")}
        assert {"pre-clip", "all-MiniLM-L6-v2"} <= expired
    finally:
        d.stop()
