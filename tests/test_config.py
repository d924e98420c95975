"""Settings.from_env(environ=...): budgets, Marqo's aliases, keep-alive, preload, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl.config import PreloadItem, Settings, Timeouts, parse_preload
from modelctl.errors import InvalidArgument


def settings(**env: str) -> Settings:
    return Settings.from_env(environ={"MODELCTL_RUNTIME_DIR": "/tmp/mc-test", **env})


def test_defaults_leave_budgets_keep_alive_and_preload_to_the_daemon() -> None:
    s = settings()
    assert (s.max_cpu_memory, s.max_cuda_memory, s.keep_alive, s.preload) == (
        None, None, None, ())
    assert s.socket_path == Path("/tmp/mc-test/modelctl.sock")


@pytest.mark.parametrize("raw, expected", [
    ("4GiB", 4 * 2**30), ("512MB", 512 * 10**6), ("512MiB", 512 * 2**20),
    ("1500000000", 1_500_000_000), ("2.5GB", 2_500_000_000), ("  8 gib ", 8 * 2**30),
    ("100KiB", 100 * 1024),
])
def test_budget_sizes(raw: str, expected: int) -> None:
    s = settings(MODELCTL_MAX_CPU_MEMORY=raw, MODELCTL_MAX_CUDA_MEMORY=raw)
    assert s.max_cpu_memory == expected and s.max_cuda_memory == expected


@pytest.mark.parametrize("raw, expected", [
    ("4", 4 * 10**9), ("0.5", 500_000_000), ("12", 12 * 10**9),
    ("2GiB", 2 * 2**30),  # a unit, when given, is honoured
])
def test_marqo_budget_aliases_are_in_gb(raw: str, expected: int) -> None:
    s = settings(MARQO_MAX_CPU_MODEL_MEMORY=raw, MARQO_MAX_CUDA_MODEL_MEMORY=raw)
    assert s.max_cpu_memory == expected and s.max_cuda_memory == expected


def test_modelctl_budget_wins_over_marqo_alias() -> None:
    s = settings(MODELCTL_MAX_CPU_MEMORY="1GiB", MARQO_MAX_CPU_MODEL_MEMORY="8",
                 MARQO_MAX_CUDA_MODEL_MEMORY="6", MODELCTL_MAX_CUDA_MEMORY="")
    assert s.max_cpu_memory == 2**30
    assert s.max_cuda_memory == 6 * 10**9  # an empty MODELCTL_ value counts as unset


@pytest.mark.parametrize("var, raw", [
    ("MODELCTL_MAX_CPU_MEMORY", "lots"), ("MODELCTL_MAX_CPU_MEMORY", "4 parsecs"),
    ("MODELCTL_MAX_CPU_MEMORY", "-1GiB"), ("MODELCTL_MAX_CPU_MEMORY", "0"),
    ("MODELCTL_MAX_CUDA_MEMORY", "8GiBB"), ("MARQO_MAX_CPU_MODEL_MEMORY", "four"),
    ("MARQO_MAX_CUDA_MODEL_MEMORY", "0"),
])
def test_bad_budgets_name_the_variable(var: str, raw: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        settings(**{var: raw})
    assert var in info.value.message and info.value.status == 400


@pytest.mark.parametrize("raw, expected", [
    ("10m", 600.0), ("30s", 30.0), ("0", 0.0), ("1h30m", 5400.0), ("45", 45.0),
    ("1.5", 1.5), ("-1", None), ("never", None), ("", None),
])
def test_keep_alive(raw: str, expected: float | None) -> None:
    assert settings(MODELCTL_KEEP_ALIVE=raw).keep_alive == expected


@pytest.mark.parametrize("raw", ["soon", "10 minutes", "nan", "1e300", "5x"])
def test_bad_keep_alive(raw: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        settings(MODELCTL_KEEP_ALIVE=raw)
    assert "MODELCTL_KEEP_ALIVE" in info.value.message


def test_connection_and_shutdown_timers() -> None:
    assert settings().timeouts == Timeouts(idle_connection_s=30.0, request_head_s=10.0,
                                           request_body_s=60.0, shutdown_grace_s=30.0)
    s = settings(MODELCTL_IDLE_CONNECTION_TIMEOUT="500ms", MODELCTL_REQUEST_HEAD_TIMEOUT="2",
                 MODELCTL_REQUEST_BODY_TIMEOUT="2m", MODELCTL_SHUTDOWN_GRACE=" 1h ")
    assert s.timeouts == Timeouts(idle_connection_s=0.5, request_head_s=2.0,
                                  request_body_s=120.0, shutdown_grace_s=3600.0)


@pytest.mark.parametrize("raw", ["0", "-1", "never", "nan", "2d", "soon", "1e300"])
def test_bad_timers_name_the_variable(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="MODELCTL_SHUTDOWN_GRACE"):
        settings(MODELCTL_SHUTDOWN_GRACE=raw)
    # A client leaves them to the daemon, as every knob only the daemon reads.
    lenient = Settings.from_env(environ={"MODELCTL_RUNTIME_DIR": "/tmp/mc-test",
                                         "MODELCTL_IDLE_CONNECTION_TIMEOUT": raw}, strict=False)
    assert lenient.timeouts == Timeouts()


def test_preload_names_json_and_comma_lists() -> None:
    s = settings(MODELCTL_PRELOAD="all-MiniLM-L6-v2, ViT-B/32")
    assert s.preload == (PreloadItem("all-MiniLM-L6-v2"), PreloadItem("ViT-B/32"))
    s = settings(MODELCTL_PRELOAD='["hf/e5-base-v2", "ViT-L/14"]')
    assert [i.name for i in s.preload] == ["hf/e5-base-v2", "ViT-L/14"]


def test_marqo_preload_shapes() -> None:
    props = {"name": "tiny", "type": "open_clip", "dimensions": 32, "localpath": "/x/t.pt"}
    raw = ('["hf/e5-base-v2", {"model": "my-clip", "modelProperties": '
           '{"name": "tiny", "type": "open_clip", "dimensions": 32, "localpath": "/x/t.pt"}}]')
    s = settings(MARQO_MODELS_TO_PRELOAD=raw)
    assert s.preload == (PreloadItem("hf/e5-base-v2"), PreloadItem("my-clip", props))
    # One object alone, and an item with its own device.
    one = parse_preload('{"model": "ViT-B/32", "device": "cuda:1"}', "X")
    assert one == (PreloadItem("ViT-B/32", None, "cuda:1"),)
    assert parse_preload("[]", "X") == () and parse_preload("  ", "X") == ()


def test_both_preload_variables_add_up_without_duplicates() -> None:
    s = settings(MODELCTL_PRELOAD="a,b", MARQO_MODELS_TO_PRELOAD='["b", "c"]')
    assert [i.name for i in s.preload] == ["a", "b", "c"]


@pytest.mark.parametrize("raw", [
    "[1, 2]", '["ok", null]', '[{"modelProperties": {}}]', '[{"model": ""}]',
    '[{"model": "x", "modelProperties": "not an object"}]', '["unterminated',
    '[{"model": "x", "device": 0}]',
])
def test_bad_preload_is_invalid_argument(raw: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        settings(MARQO_MODELS_TO_PRELOAD=raw)
    assert "MARQO_MODELS_TO_PRELOAD" in info.value.message


def test_other_settings_from_env() -> None:
    s = settings(MODELCTL_HTTP_PORT="8882", MODELCTL_HTTP_HOST="0.0.0.0",
                 MODELCTL_API_KEY="k", MODELCTL_DEVICE="cuda:1", HF_HUB_OFFLINE="1")
    assert (s.http_port, s.http_host, s.api_key, s.default_device, s.offline) == (
        8882, "0.0.0.0", "k", "cuda:1", True)
    with pytest.raises(InvalidArgument):
        settings(MODELCTL_HTTP_PORT="http")
    with pytest.raises(InvalidArgument):
        settings(MODELCTL_HTTP_PORT="70000")


def test_flags_override_the_environment() -> None:
    s = settings(MODELCTL_MAX_CPU_MEMORY="1GiB").with_overrides(max_cpu_memory=5 * 10**8,
                                                                  max_cuda_memory=None)
    assert s.max_cpu_memory == 5 * 10**8 and s.max_cuda_memory is None
