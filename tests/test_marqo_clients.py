"""Marqo's own Python client, from PyPI and unchanged, against modelctl's TCP listener.

Its pins (requests, pydantic, packaging) are not ours, so each release lives in a venv
of its own under /tmp/modelctl-test-venvs, made once and reused by later runs. A script
runs inside that venv and prints what each documented call returned or raised.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelctl import __version__
from modelctl.testing import Daemon

VENV_ROOT = Path("/tmp/modelctl-test-venvs")
MARQO_2 = "2.1.0"    # the last 2.x: the calls live on Client, eject_model(name, device)
MARQO_3 = "3.18.2"   # the newest 3.x: the calls live on mq.index(...), eject_model(name)
HF_MINILM = "hf/all-MiniLM-L6-v2"

SCRIPT = r'''
import importlib.metadata
import json
import sys
import warnings

warnings.simplefilter("ignore")  # the 2.x client marks these calls deprecated
import marqo
from marqo.errors import MarqoWebError

url, key, model = sys.argv[1:4]
version = importlib.metadata.version("marqo")
mq = marqo.Client(url, api_key=key or None)
api = mq if version.startswith("2.") else mq.index("any-index")
out = {"marqo": version}


def call(name, fn):
    try:
        out[name] = {"ok": fn()}
    except MarqoWebError as e:
        out[name] = {"error": {"status_code": e.status_code, "code": e.code,
                               "type": e.error_type, "message": e.message}}


call("loaded", api.get_loaded_models)
call("cpu", api.get_cpu_info)
call("cuda", api.get_cuda_info)
if version.startswith("2."):
    call("eject_missing", lambda: api.eject_model("ViT-L/14", "cuda"))
    call("eject_other_device", lambda: api.eject_model(model, "cuda"))
    call("eject", lambda: api.eject_model(model, "cpu"))
else:
    call("eject_missing", lambda: api.eject_model("ViT-L/14"))
    call("eject", lambda: api.eject_model(model))
    from marqo import index  # what its GET / version check stored for this URL
    out["version_seen"] = index.marqo_url_and_version_cache.get(url.lower())
call("loaded_after", api.get_loaded_models)
print(json.dumps(out))
'''


def marqo_python(version: str) -> Path:
    """The python of a venv with ``marqo==version``; skip when pip cannot install it."""
    venv = VENV_ROOT / f"marqo-{version}"
    python = venv / "bin" / "python"
    done = venv / ".installed"
    if done.exists():
        return python
    VENV_ROOT.mkdir(parents=True, exist_ok=True)
    with open(VENV_ROOT / f"marqo-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be making the same venv
        if done.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", f"marqo=={version}"],
                             capture_output=True, text=True, timeout=600)
        if pip.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.skip(f"pip cannot install marqo=={version}: {pip.stderr.strip()[-400:]}")
        done.write_text(version)
    return python


def run_marqo(version: str, url: str, model: str, key: str = "") -> dict[str, Any]:
    python = marqo_python(version)
    proc = subprocess.run([str(python), "-c", SCRIPT, url, key, model],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["marqo"] == version
    return result


def error(status: int, code: str, message: str) -> dict[str, Any]:
    """What MarqoWebError carries for one of our error bodies."""
    return {"error": {"status_code": status, "code": code, "type": "invalid_request",
                      "message": {"message": message, "code": code, "type": "invalid_request",
                                  "link": None}}}


NO_CUDA = error(400, "hardware_compatability_error", "CUDA is not available on this instance")


def check_cpu(result: dict[str, Any]) -> None:
    cpu = result["cpu"]["ok"]
    assert list(cpu) == ["cpu_usage_percent", "memory_used_percent", "memory_used_gb"]
    assert cpu["cpu_usage_percent"].endswith(" %") and cpu["memory_used_percent"].endswith(" %")
    float(cpu["memory_used_gb"])


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
