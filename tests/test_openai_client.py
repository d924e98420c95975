"""The OpenAI Python client against the daemon's TCP listener, with its default settings.

``openai`` asks for ``encoding_format: "base64"`` unless told otherwise and decodes the
little-endian float32s itself, so its vectors only match when our base64 is OpenAI's.
The shared daemon has no API key, so the ``Authorization: Bearer`` the client always
sends is ignored; a daemon with ``--api-key`` takes that bearer token as its key.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import openai
import pytest

from modelctl.testing import MINILM, Daemon

SENTENCES = ["The cat sits on the mat.", "A quick brown fox jumps over the lazy dog.",
             "modelctl keeps one copy of each model in memory.", "Ünïcödé, too — why not?"]


@pytest.fixture
def client(daemon: Daemon) -> openai.OpenAI:
    daemon.client.load_model(MINILM, "cpu")
    return openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="any-string", max_retries=0)


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1)
                                         * np.linalg.norm(want, axis=1))


def test_default_client_gets_base64_and_the_right_vectors(client: openai.OpenAI,
                                                          minilm_reference: Any) -> None:
    raw = client.embeddings.with_raw_response.create(model=MINILM, input=SENTENCES)
    wire = json.loads(raw.http_response.content)
    # The client's default request: base64 on the wire, floats in its hands.
    assert all(isinstance(item["embedding"], str) for item in wire["data"])
    reply = raw.parse()
    assert reply.object == "list" and reply.model == MINILM
    assert [item.index for item in reply.data] == list(range(len(SENTENCES)))
    got = np.array([item.embedding for item in reply.data], dtype=np.float32)
    assert got.shape == (len(SENTENCES), 384)
    assert float(cosines(got, minilm_reference.encode(SENTENCES)).min()) > 0.9999
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > len(SENTENCES) * 2


def test_float_and_base64_round_trip_to_the_same_vectors(client: openai.OpenAI) -> None:
    packed = client.embeddings.create(model=MINILM, input=SENTENCES)
    floats = client.embeddings.create(model=MINILM, input=SENTENCES, encoding_format="float")
    assert np.array_equal(np.array([d.embedding for d in packed.data], dtype=np.float32),
                          np.array([d.embedding for d in floats.data], dtype=np.float32))


def test_single_string_input_and_extra_fields(client: openai.OpenAI, minilm_reference: Any) -> None:
    # user and dimensions are OpenAI's; the daemon ignores what it does not support.
    reply = client.embeddings.create(model=MINILM, input=SENTENCES[0], user="tests")
    assert len(reply.data) == 1
    got = np.array([reply.data[0].embedding], dtype=np.float32)
    assert float(cosines(got, minilm_reference.encode(SENTENCES[:1]))[0]) > 0.9999


def test_errors_reach_the_client_with_the_contract_body(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="no-such-model-anywhere", input=["x"])
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "invalid_argument"


def test_api_key_is_the_clients_bearer_token(keyed: Daemon, minilm_reference: Any) -> None:
    d = keyed
    d.client.load_model(MINILM, "cpu")  # the Unix socket needs no key
    base = f"{d.url}/v1"
    good = openai.OpenAI(base_url=base, api_key=d.api_key, max_retries=0)
    reply = good.embeddings.create(model=MINILM, input=SENTENCES[:2])
    got = np.array([item.embedding for item in reply.data], dtype=np.float32)
    assert float(cosines(got, minilm_reference.encode(SENTENCES[:2])).min()) > 0.9999
    bad = openai.OpenAI(base_url=base, api_key="guess", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.embeddings.create(model=MINILM, input=["x"])
    assert caught.value.status_code == 401
