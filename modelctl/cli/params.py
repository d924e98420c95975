"""Parameters shared by several commands, declared once with ``Annotated``.

Parsers for values Typer cannot check itself (sizes, durations, JSON) live here too and
raise ``typer.BadParameter``, so a bad value is a usage error (exit 2) that names its flag.
Which values complete from where (the daemon's models, devices, files) is
``completion/responder.py``'s ``SOURCES``, keyed by these flags and metavars.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from modelctl.units import parse_duration, parse_size

JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print JSON on stdout (only the JSON document; hints go to stderr, "
                   "and an error is a JSON document there).")]

DeviceOpt = Annotated[str | None, typer.Option(
    "--device", "-d", metavar="DEVICE",
    help="cpu, cuda or cuda:N [default: the daemon's (cuda when present, else cpu)]")]

LoadedDeviceOpt = Annotated[str | None, typer.Option(
    "--device", "-d", metavar="DEVICE",
    help="Only the copy on this device [default: every device it is loaded on].")]

ModelArg = Annotated[str, typer.Argument(
    metavar="NAME",
    help="A registry name or alias (`modelctl models` lists them), or a custom model's name.")]

_loaded_name = typer.Argument(
    metavar="NAME",
    help="The name of a loaded model (`modelctl ls` lists them).")
LoadedModelArg = Annotated[str, _loaded_name]
OptionalLoadedModelArg = Annotated[str | None, _loaded_name]

KeepAliveOpt = Annotated[str | None, typer.Option(
    "--keep-alive", metavar="DURATION",
    help="Eject the model after it has been idle this long (30s, 10m, 1h; -1: never).")]

PrecisionOpt = Annotated[str | None, typer.Option(
    "--precision", metavar="PRECISION",
    help="fp32, fp16 (cuda), bf16 or int8 (ONNX Runtime) [default: the daemon's, fp32].")]

EngineOpt = Annotated[str | None, typer.Option(
    "--engine", metavar="ENGINE",
    help="torch or onnx (text models on cpu) [default: the daemon's, torch; onnx for int8].")]

LoadedPrecisionOpt = Annotated[str | None, typer.Option(
    "--precision", metavar="PRECISION",
    help="Only the variant of this precision [default: every variant].")]

LoadedEngineOpt = Annotated[str | None, typer.Option(
    "--engine", metavar="ENGINE", help="Only the variant on this engine [default: every variant].")]

# -- the server's settings (serve, daemon start) ---------------------------------------
ServerPrecisionOpt = Annotated[str | None, typer.Option(
    "--precision", metavar="PRECISION",
    help="Precision of loads that name none: fp32, fp16, bf16, int8 [default: fp32].")]

ServerEngineOpt = Annotated[str | None, typer.Option(
    "--engine", metavar="ENGINE",
    help="Engine of loads that name none: torch or onnx [default: torch].")]

ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", metavar="N", min=0, max=1024,
    help="cpu threads per forward pass [default: 0, the cores other processes leave free].")]

HttpOpt = Annotated[int | None, typer.Option(
    "--http", metavar="PORT", min=0, max=65535,
    help="Also listen for HTTP on this TCP port (the Marqo-compatible API; 0: any free port).")]

HostOpt = Annotated[str | None, typer.Option(
    "--host", metavar="HOST", help="Address for --http [default: 127.0.0.1].")]

ServerApiKeyOpt = Annotated[str | None, typer.Option(
    "--api-key", metavar="KEY",
    help="Require this key (x-api-key or Bearer) on every TCP request.")]

MaxCpuMemoryOpt = Annotated[str | None, typer.Option(
    "--max-cpu-memory", metavar="SIZE", help="Budget for models on cpu (4GiB, 512MB).")]

MaxCudaMemoryOpt = Annotated[str | None, typer.Option(
    "--max-cuda-memory", metavar="SIZE", help="Budget for models on each GPU (8GiB).")]

ServerKeepAliveOpt = Annotated[str | None, typer.Option(
    "--keep-alive", metavar="DURATION",
    help="Default idle time before a model is ejected (10m; -1: never) [default: never].")]


def help_without_command(ctx: typer.Context) -> None:
    """A group called without a command prints its help on stdout and exits 0."""
    if ctx.invoked_subcommand is None and not ctx.resilient_parsing:
        sys.stdout.write(ctx.get_help() + "\n")
        raise typer.Exit()


# -- parsers ---------------------------------------------------------------------------
def size_value(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from exc


def duration_value(text: str | None, flag: str) -> float | None:
    """Seconds, or ``-1.0`` for "never" (the API's spelling); ``None`` when not given."""
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from exc
    return -1.0 if seconds is None else seconds


def json_object_value(text: str | None, flag: str) -> dict[str, Any] | None:
    """A JSON object given inline or as ``@file.json``."""
    if text is None:
        return None
    raw = text
    if text.startswith("@"):
        try:
            raw = Path(text[1:]).expanduser().read_text()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {text[1:]}: {exc.strerror}",
                                     param_hint=flag) from exc
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=flag) from exc
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object ({...})", param_hint=flag)
    return value


def local_model_name(name: str) -> str:
    """``name`` with a local path made absolute: the daemon runs elsewhere (its own
    working directory), so ``./my-model`` must reach it as ``/home/me/my-model``.

    A path is a name that starts with ``.`` or ``~``, or names a directory that exists
    here (``models/e5`` beside you, rather than a hub id of that spelling).
    """
    import os

    if name.startswith((".", "~")) or (not name.startswith("/") and os.path.isdir(name)):
        return os.path.abspath(os.path.expanduser(name))
    return name


def local_properties(props: dict[str, Any] | None) -> dict[str, Any] | None:
    """``properties`` with a relative ``localpath`` made absolute (see ``local_model_name``)."""
    import os

    path = (props or {}).get("localpath")
    if props is None or not isinstance(path, str) or path.startswith(("/", "file:")):
        return props
    return {**props, "localpath": os.path.abspath(os.path.expanduser(path))}
