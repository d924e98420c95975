"""Marqo's own Python client, from PyPI and unchanged, against modelctl's TCP listener
(tests/marqo_sdk.py installs each release in a venv of its own and runs it)."""

from __future__ import annotations

from typing import Any

import pytest

from modelctl import __version__
from modelctl.testing import Daemon
from tests.marqo_sdk import (
    HF_MINILM,
    MARQO_2,
    MARQO_3,
    NO_CUDA,
    check_cpu,
    error,
    marqo_python,
    run_marqo,
)


@pytest.fixture(scope="module", params=[MARQO_2, MARQO_3])
def marqo_version(request: pytest.FixtureRequest) -> str:
    marqo_python(request.param)  # install (or skip) before any daemon work
    return str(request.param)


def test_marqo_client_calls(clean_daemon: Daemon, marqo_version: str) -> None:
    clean_daemon.client.load_model(HF_MINILM, "cpu")
    result = run_marqo(marqo_version, clean_daemon.url, HF_MINILM)

    assert result["loaded"] == {"ok": {"models": [{"model_name": HF_MINILM,
                                                   "model_device": "cpu"}]}}
    check_cpu(result)
    assert result["cuda"] == NO_CUDA
    assert result["eject"] == {"ok": {
        "result": "success",
        "message": f"successfully eject model_name `{HF_MINILM}` from device `cpu`"}}
    assert result["loaded_after"] == {"ok": {"models": []}}
    assert clean_daemon.client.list_models() == []  # really gone from the one cache
    if marqo_version.startswith("2."):
        assert result["eject_missing"] == error(
            404, "model_not_in_cache",
            "The model_name `ViT-L/14` device `cuda` is not cached or found")
        assert result["eject_other_device"] == error(
            404, "model_not_in_cache",
            f"The model_name `{HF_MINILM}` device `cuda` is not cached or found")
    else:
        assert result["eject_missing"] == error(
            404, "model_not_in_cache", "The model_name `ViT-L/14` is not cached or found")
        # The 3.x client reads GET / once per process for the server's version.
        assert result["version_seen"] == __version__


def test_marqo_client_sends_the_api_key(keyed: Daemon, marqo_version: str,
                                        tiny_clip: dict[str, Any]) -> None:
    keyed.client.load_model("tiny-clip", "cpu", properties=tiny_clip)
    denied = run_marqo(marqo_version, keyed.url, "tiny-clip")
    unauthorized = error(401, "unauthorized", "missing or wrong API key: send it as "
                                              "x-api-key or Authorization: Bearer")
    for call in ("loaded", "cpu", "cuda", "eject", "loaded_after"):
        assert denied[call] == unauthorized, call
    assert [m["name"] for m in keyed.client.list_models()] == ["tiny-clip"]

    result = run_marqo(marqo_version, keyed.url, "tiny-clip", key=keyed.api_key or "")
    assert result["loaded"] == {"ok": {"models": [{"model_name": "tiny-clip",
                                                   "model_device": "cpu"}]}}
    check_cpu(result)
    assert result["cuda"] == NO_CUDA
    assert result["eject"]["ok"]["result"] == "success"
    assert result["loaded_after"] == {"ok": {"models": []}}
    assert keyed.api_key and keyed.api_key not in keyed.log()
