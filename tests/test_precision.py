"""Which variants each device runs (pure rules), their settings, and the thread choice."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from modelctl.config import Settings, set_compute_environment
from modelctl.daemon.loaders.precision import (
    check,
    choose,
    cpu_flags,
    cpu_native,
    cuda_native,
    marqo_precision,
    on_device,
)
from modelctl.daemon.threads import ThreadGovernor, runnable_elsewhere
from modelctl.errors import HardwareCompatibilityError, InvalidArgument
from modelctl.registry import lookup
from modelctl.registry.spec import parse

AVX2 = frozenset({"avx", "avx2", "fma"})
SAPPHIRE = AVX2 | {"avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"}


def test_native_precisions_follow_cpu_flags_and_gpu_capability(tmp_path: Path) -> None:
    assert cpu_native(AVX2) == ["fp32", "int8"]
    assert cpu_native(SAPPHIRE) == ["fp32", "bf16", "int8"]
    assert cpu_native(frozenset()) == ["fp32"]
    assert cuda_native((7, 5)) == ["fp32", "fp16"]
    assert cuda_native((9, 0)) == ["fp32", "fp16", "bf16"]
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_variant_rules_refuse_or_warn() -> None:
    native = cpu_native(AVX2)
    assert check("sbert", "cpu", "torch", "fp32", native) is None
    assert "emulated" in (check("sbert", "cpu", "torch", "bf16", native) or "")
    assert check("sbert", "cpu", "torch", "bf16", cpu_native(SAPPHIRE)) is None
    assert check("hf", "cpu", "onnx", "int8", native) is None
    assert check("clip", "cuda:0", "torch", "fp16", cuda_native((8, 0))) is None
    with pytest.raises(HardwareCompatibilityError, match="cuda only"):
        check("sbert", "cpu", "torch", "fp16", native)
    with pytest.raises(HardwareCompatibilityError, match="compute capability"):
        check("sbert", "cuda:0", "torch", "bf16", cuda_native((7, 0)))
    with pytest.raises(HardwareCompatibilityError, match="cpu only"):
        check("sbert", "cuda:0", "onnx", "fp32", cuda_native((8, 0)))
    with pytest.raises(InvalidArgument, match="engine onnx"):
        check("sbert", "cpu", "torch", "int8", native)
    with pytest.raises(InvalidArgument, match="text models"):
        check("open_clip", "cpu", "onnx", "fp32", native)
    with pytest.raises(InvalidArgument, match="fp32 or int8"):
        check("sbert", "cpu", "onnx", "bf16", native)


def test_choose_fills_in_daemon_defaults() -> None:
    assert choose(None, None, "torch", "fp32") == ("torch", "fp32")
    assert choose(None, "bf16", "torch", "fp32") == ("torch", "bf16")
    assert choose(None, "int8", "torch", "fp32") == ("onnx", "int8")  # int8 is ONNX's
    assert choose("onnx", None, "torch", "fp32") == ("onnx", "fp32")
    assert choose(None, None, "onnx", "int8") == ("onnx", "int8")
    with pytest.raises(InvalidArgument, match="precision"):
        choose(None, "fp64", "torch", "fp32")
    with pytest.raises(InvalidArgument, match="engine"):
        choose("tensorrt", None, "torch", "fp32")


def test_variant_and_thread_settings_from_env(tmp_path: Path) -> None:
    base = {"MODELCTL_RUNTIME_DIR": str(tmp_path)}
    plain = Settings.from_env(base)
    assert (plain.precision, plain.engine, plain.threads) == ("fp32", "torch", None)
    assert plain.cache_dir.name == "modelctl"
    s = Settings.from_env({**base, "MODELCTL_PRECISION": "INT8", "MODELCTL_ENGINE": "onnx",
                           "MODELCTL_THREADS": "1", "MODELCTL_CACHE_DIR": str(tmp_path)})
    assert (s.precision, s.engine, s.threads, s.cache_dir) == ("int8", "onnx", 1, tmp_path)
    assert Settings.from_env({**base, "MODELCTL_THREADS": "0"}).threads is None  # adapt
    assert Settings.from_env({**base, "XDG_CACHE_HOME": "/c"}).cache_dir == Path("/c/modelctl")
    for var, value in (("MODELCTL_PRECISION", "fp8"), ("MODELCTL_ENGINE", "trt"),
                       ("MODELCTL_THREADS", "two"), ("MODELCTL_THREADS", "-1")):
        with pytest.raises(InvalidArgument, match=var):
            Settings.from_env({**base, var: value})
    env: dict[str, str] = {}
    set_compute_environment(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    set_compute_environment(env)  # a user's own choice is kept
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_thread_governor_follows_the_cores_others_leave_free() -> None:
    assert ThreadGovernor(pinned=3, cores=2).threads() == 3
    # (machine busy seconds, ours), cumulative; one sample every second of the clock.
    readings = iter([(0.0, 0.0), (0.0, 0.0), (2.0, 1.0), (2.2, 1.2), (4.2, 3.2), (5.1, 3.2),
                     (5.3, 3.2)])
    now = iter(range(1, 100))
    governor = ThreadGovernor(cores=2, busy_seconds=lambda: next(readings),
                              others_now=lambda: None, clock=lambda: float(next(now)))
    assert governor.threads() == 2  # the first sample: no interval yet, every core
    assert governor.threads() == 1  # others used one core's worth while we used one
    assert governor.threads() == 2  # quiet again: both cores
    assert governor.threads() == 2  # all of the busy time was ours
    assert governor.threads() == 1  # 0.9 of a core elsewhere, none of ours
    assert governor.threads() == 2  # a flicker of 0.2: not worth giving a core up


def test_thread_governor_trusts_the_instant_count_when_it_says_less() -> None:
    # Others used both cores over every last second (a client encoding before it sent
    # its request), but the instant count of their runnable tasks may say otherwise.
    readings = iter([(0.0, 0.0)] + [(2.0 * i, 0.0) for i in range(1, 10)])
    running = iter([0, 1, 2, 1, 0, 1, 1, 1, 1, 1, 1])
    now = iter(range(1, 100))
    slept: list[float] = []
    governor = ThreadGovernor(cores=2, busy_seconds=lambda: next(readings),
                              others_now=lambda: next(running),
                              clock=lambda: float(next(now)), sleep=slept.append)
    assert governor.threads() == 2  # the first sample: no interval yet
    assert governor.threads() == 2  # none of theirs runnable now: the client waits on us
    assert governor.threads() == 1  # one runnable now, and busy all along
    assert governor.threads() == 1  # two: still at least one thread
    assert not slept  # only the encode thread settles
    # The encode thread looks again: a tail of spinning workers that ends is not load.
    assert governor.threads(settle=True) == 2 and len(slept) == 1
    # One that stays runnable through every look is.
    assert governor.threads(settle=True) == 1 and len(slept) == 6


def test_runnable_elsewhere_leaves_out_this_process() -> None:
    # This process's one busy thread is runnable while it asks; it is not counted. Other
    # processes' load comes and goes (other test workers, other work on the machine): the
    # count must reach at most one at some instant within a few seconds of asking.
    counts = [runnable_elsewhere() for _ in range(20)]
    assert all(c is None or c >= 0 for c in counts)
    if counts[0] is None:
        return
    deadline = time.monotonic() + 10
    while min(c for c in counts if c is not None) > 1 and time.monotonic() < deadline:
        counts.append(runnable_elsewhere())
        assert counts[-1] is not None and counts[-1] >= 0
    assert min(c for c in counts if c is not None) <= 1


def test_marqos_fp16_is_fp32_on_cpu_and_fp16_on_cuda() -> None:
    named = lookup("fp16/ViT-B/32")
    assert named is not None and marqo_precision(named) == "fp16"
    by_properties = parse("half", {"type": "open_clip", "name": "ViT-B-32", "dimensions": 512,
                                   "precision": "fp16"}, custom=True)
    assert marqo_precision(by_properties) == "fp16"
    for spec in (named, by_properties):
        on_cpu, warning = on_device(spec, "cpu")
        assert on_cpu.precision == "fp32" and warning and "fp32" in warning
        assert on_device(spec, "cuda:0") == (spec, None)
    # fp16 a client asks for, on a model Marqo runs in fp32, is not Marqo's: left to check.
    plain = lookup("all-MiniLM-L6-v2")
    assert plain is not None and marqo_precision(plain) is None
    asked = replace(plain, precision="fp16")
    assert on_device(asked, "cpu") == (asked, None)
