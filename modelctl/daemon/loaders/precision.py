"""Which (engine, precision) variants a device can run, and which it runs natively.

Stdlib only: ``/v1/devices`` answers from it before torch is imported, and the rules
are one table a user can read in the docs.

- ``fp32`` runs everywhere and is the default (Marqo's vectors).
- ``bf16`` on cpu is native with AVX512-BF16 or AMX (``avx512_bf16``/``amx_bf16`` in
  ``/proc/cpuinfo``). Without them torch emulates it several times slower than fp32
  (measured on an AVX2 EPYC: 0.2x); such a load is allowed but carries a warning, so a
  user comparing variants sees why it is slow rather than a refusal to try. On cuda it
  needs compute capability 8.0 (Ampere) or later.
- ``fp16`` runs on cuda only: cpus have no fast fp16 matrix products, so on cpu it is
  refused with 400 when a client asks for it (``precision``, ``--precision``). Marqo's
  own spellings (``fp16/*`` names, ``properties.precision: "fp16"``) run as fp32 on
  cpu instead, as in Marqo, and the entry carries a warning saying so.
- ``int8`` runs on cpu through ONNX Runtime (``int8``: smoothed dynamic quantisation,
  uint8 per-channel weights); torch's own dynamic quantisation loses too much (a worst
  cosine of 0.92 to fp32 on MiniLM), so int8 means engine ``onnx``. AVX2 runs it.
- engine ``onnx`` runs text models (sbert, hf) on cpu in fp32 or int8.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from modelctl.config import ENGINES, PRECISIONS
from modelctl.errors import HardwareCompatibilityError, InvalidArgument

if TYPE_CHECKING:
    from modelctl.registry import ModelSpec

__all__ = ["ENGINES", "PRECISIONS", "check", "choose", "cpu_flags", "cpu_native", "cuda_native",
           "marqo_precision", "on_device"]
ONNX_FAMILIES = ("sbert", "hf")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first cpu's feature flags (empty where /proc/cpuinfo is not readable)."""
    try:
        with cpuinfo.open() as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_native(flags: frozenset[str]) -> list[str]:
    """Precisions this cpu computes natively, fastest last."""
    native = ["fp32"]
    if flags & set(_BF16_FLAGS):
        native.append("bf16")
    if flags & set(_INT8_FLAGS) or "avx2" in flags or "asimd" in flags:
        native.append("int8")
    return native


def cuda_native(capability: tuple[int, int] | None) -> list[str]:
    """Precisions a GPU of compute ``capability`` runs natively."""
    native = ["fp32", "fp16"]
    if capability is not None and capability >= (8, 0):
        native.append("bf16")
    return native


def choose(engine: str | None, precision: str | None, default_engine: str,
           default_precision: str) -> tuple[str, str]:
    """The variant a load asks for: given fields, then the daemon's defaults.

    int8 alone means ONNX Runtime's int8 (the only int8 modelctl runs).
    """
    if precision is not None and precision not in PRECISIONS:
        raise InvalidArgument(f"precision must be one of {', '.join(PRECISIONS)}, "
                              f"not {precision!r}")
    if engine is not None and engine not in ENGINES:
        raise InvalidArgument(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    chosen_precision = precision or default_precision
    if engine is None:
        engine = "onnx" if chosen_precision == "int8" and precision else default_engine
    return engine, chosen_precision


def check(family: str, device: str, engine: str, precision: str,
          native: list[str]) -> str | None:
    """Refuse (400) a variant ``device`` cannot run; a warning for one it runs slowly.

    ``HardwareCompatibilityError`` (Marqo's code for "not on this device") when the
    device is the reason, ``InvalidArgument`` when no device would run it.
    """
    where = "cuda" if device.startswith("cuda") else "cpu"
    if engine == "onnx":
        if family not in ONNX_FAMILIES:
            raise InvalidArgument(
                f"engine onnx runs text models (sbert, hf) only; a {family} model runs "
                "on engine torch (fp32, or fp16 on cuda)")
        if where != "cpu":
            raise HardwareCompatibilityError(
                "engine onnx runs on cpu only; on cuda use engine torch with fp16")
        if precision not in ("fp32", "int8"):
            raise InvalidArgument(f"engine onnx runs fp32 or int8, not {precision}")
        return None
    if precision == "int8":
        raise InvalidArgument("int8 runs on engine onnx (ONNX Runtime's per-channel "
                              "quantisation); torch's int8 loses too much accuracy")
    if precision == "fp16" and where == "cpu":
        raise HardwareCompatibilityError(
            "fp16 runs on cuda only: cpus have no fast fp16 arithmetic; on cpu use bf16 "
            "(where the cpu has AVX512-BF16 or AMX) or int8 (engine onnx)")
    if precision == "bf16" and "bf16" not in native:
        if where == "cpu":
            return ("bf16 is emulated on this cpu (no AVX512-BF16 or AMX): expect it to "
                    "run slower than fp32")
        raise HardwareCompatibilityError(
            f"bf16 needs a GPU of compute capability 8.0 or later; {device} runs fp16")
    return None


def marqo_precision(spec: ModelSpec) -> str | None:
    """The precision Marqo's own spelling gives ``spec`` (an ``fp16/*`` name, or
    ``properties.precision``); ``None`` where it names none."""
    if spec.family == "fp16_clip":
        return "fp16"
    value = spec.properties.get("precision")
    return value if value in PRECISIONS else None


def on_device(spec: ModelSpec, device: str) -> tuple[ModelSpec, str | None]:
    """``spec`` as it runs on ``device``, and a warning where that differs from its name.

    Marqo's fp16 (an ``fp16/*`` name, ``properties.precision: "fp16"``) runs as fp32 on
    cpu, as Marqo runs it; an fp16 asked for by a client alone stays fp16 and is refused
    by ``check``.
    """
    if (spec.precision == "fp16" and not device.startswith("cuda")
            and marqo_precision(spec) == "fp16"):
        return replace(spec, precision="fp32"), (
            f"{spec.name} is fp16 in Marqo's terms; fp16 runs on cuda only, so on "
            f"{device} it runs as fp32, as Marqo runs it")
    return spec, None
