"""Marqo's own Python client, from PyPI and unchanged, run against a URL.

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
