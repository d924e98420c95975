"""OpenAI's model list and model object on ``/v1/models``, through the real ``openai`` SDK.

``GET /v1/models`` is ``{"object": "list", "data": [...]}`` as OpenAI, Ollama and LM
Studio serve it; each item also carries modelctl's whole cache entry, which
``Client.list_models()`` returns.
"""

from __future__ import annotations

import openai
import pytest

from modelctl.testing import MINILM, Daemon
from modelctl.units import parse_iso


@pytest.fixture
def sdk(clean_daemon: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{clean_daemon.url}/v1", api_key="any", max_retries=0)


def test_models_list_is_openais_list_of_loaded_models(clean_daemon: Daemon,
                                                      sdk: openai.OpenAI,
                                                      tiny_clip: dict) -> None:
    assert list(sdk.models.list()) == []
    clean_daemon.client.load_model(MINILM, "cpu")
    clean_daemon.client.load_model("tiny/clip-32", "cpu", properties=tiny_clip)
    listed = {m.id: m for m in sdk.models.list()}
    assert set(listed) == {MINILM, "tiny/clip-32"}
    minilm = listed[MINILM]
    assert minilm.object == "model" and minilm.owned_by == "sentence-transformers"
    entry = {e["name"]: e for e in clean_daemon.client.list_models()}[MINILM]
    assert minilm.created == int(parse_iso(entry["loaded_at"]).timestamp())
    # modelctl's entry rides along on each item
    assert minilm.model_extra["device"] == "cpu" and minilm.model_extra["dimensions"] == 384
    assert listed["tiny/clip-32"].model_extra["family"] == "open_clip"


def test_models_retrieve_takes_ids_with_slashes(clean_daemon: Daemon,
                                                sdk: openai.OpenAI) -> None:
    clean_daemon.client.load_model("all-MiniLM-L6-v2", "cpu")
    model = sdk.models.retrieve(MINILM)  # the canonical name of what was loaded by alias
    assert model.id == MINILM and model.object == "model"
    assert model.model_extra["name"] == "all-MiniLM-L6-v2"
    assert model.model_extra["devices"] == ["cpu"]
    assert sdk.models.retrieve("all-MiniLM-L6-v2").id == "all-MiniLM-L6-v2"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("sentence-transformers/not-loaded")


def test_client_list_models_still_returns_entries(clean_daemon: Daemon) -> None:
    clean_daemon.client.load_model(MINILM, "cpu")
    [entry] = clean_daemon.client.list_models()
    assert entry["name"] == MINILM and entry["state"] == "ready"
    assert entry["id"] == MINILM and entry["object"] == "model"
    raw = clean_daemon.client.request("GET", "/v1/models")
    assert raw["object"] == "list" and raw["data"] == [entry]
    assert clean_daemon.client.get_model(MINILM)["bytes"] == entry["bytes"]


def test_cli_ls_reads_the_list(clean_daemon: Daemon) -> None:
    clean_daemon.client.load_model(MINILM, "cpu")
    result = clean_daemon.cli("ls")
    assert result.returncode == 0 and MINILM in result.stdout
