"""``devices`` (memory per device) and ``top`` (devices and models, refreshed live)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from modelctl.cli import output
from modelctl.cli.models import entry_expiry, entry_size
from modelctl.cli.params import JsonOpt
from modelctl.cli.state import State, get_state
from modelctl.errors import DaemonNotRunning
from modelctl.units import format_bytes

if TYPE_CHECKING:
    from rich.console import RenderableType

    from modelctl.wire import CpuReport, CudaReport, DevicesReport

DEVICE_COLUMNS: list[output.Column] = [
    ("DEVICE", "left"), ("NAME", "left"), ("MEMORY", "left"), ("USED", "right"),
    ("TOTAL", "right"), ("MODELS", "right"), ("BUDGET", "right"), ("UTIL", "right"),
]

TOP_MODEL_COLUMNS: list[output.Column] = [
    ("NAME", "left"), ("DEVICE", "left"), ("STATE", "left"), ("SIZE", "right"),
    ("LAST USED", "left"), ("REQUESTS", "right"), ("IN FLIGHT", "right"), ("EXPIRES", "left"),
]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def device_rows(info: DevicesReport) -> list[list[Any]]:
    if info.get("nodes"):  # a cluster: each node's cpu, then its GPUs
        fleet_rows = []
        for node in info.get("nodes") or ():
            one = cast("DevicesReport", {"cpu": node.get("cpu") or {}, "cuda": node.get("cuda")})
            for row in device_rows(one):
                fleet_rows.append([row[0] if "/" in row[0] else f"{node.get('node')}/{row[0]}",
                                   *row[1:]])
        return fleet_rows
    cpu = info.get("cpu") or {}
    rows: list[list[Any]] = [[
        "cpu", f"{cpu.get('cores', '?')} cores",
        output.usage_bar(cpu.get("memory_used"), cpu.get("memory_total")),
        format_bytes(cpu.get("memory_used")), format_bytes(cpu.get("memory_total")),
        format_bytes(cpu.get("models_bytes")), format_bytes(cpu.get("budget")),
        _percent(cpu.get("usage_percent")),
    ]]
    for gpu in info.get("cuda") or ():
        rows.append([
            str(gpu.get("device")), str(gpu.get("name") or "-"),
            output.usage_bar(gpu.get("memory_used"), gpu.get("memory_total")),
            format_bytes(gpu.get("memory_used")), format_bytes(gpu.get("memory_total")),
            format_bytes(gpu.get("models_bytes")), format_bytes(gpu.get("budget")),
            _percent(gpu.get("utilization_percent")),
        ])
    return rows


def devices_table(info: DevicesReport) -> RenderableType:
    """The devices table, then which precisions run natively, the daemon's own memory and
    why cuda is missing, if it is."""
    from rich.console import Group
    from rich.text import Text

    from modelctl.cli.daemon import daemon_memory

    cpu = info.get("cpu") or {}
    # Lines after the table rather than its caption: rich would wrap a caption to the
    # table's width, which is narrow once columns are dropped.
    lines = [Text(line, style="dim") for line in native_note(info).splitlines()]
    if cpu.get("process_rss") is not None:
        memory = daemon_memory(cpu["process_rss"], cpu.get("process_idle_rss"))
        lines.append(Text(f"modelctl daemon: {memory}", style="dim"))
    if not info.get("cuda_available") and info.get("cuda_error"):
        lines.append(Text(f"cuda: {info['cuda_error']}", style="dim"))
    table = output.make_table(DEVICE_COLUMNS, device_rows(info),
                              drop=("MEMORY", "BUDGET", "UTIL"))
    return Group(table, *lines)


def native_note(info: DevicesReport) -> str:
    """Which precisions each device computes natively, and the cpu's threads per pass."""
    cpu = info.get("cpu")
    reports: list[CpuReport | CudaReport] = [cpu] if cpu else []
    reports += info.get("cuda") or []
    parts = [f"{r.get('device')} {' '.join(r['native_precisions'])}"
             for r in reports if r.get("native_precisions")]
    note = f"native precisions: {'; '.join(parts)}" if parts else ""
    if cpu and cpu.get("threads"):
        how = "pinned" if cpu.get("threads_pinned") else "adaptive"
        note += f"\ncpu threads per pass: {cpu.get('threads')} ({how})"
    return note


def devices(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show memory, budgets and use of the cpu and each GPU. Never starts a daemon."""
    state = get_state(ctx)
    info = _fetch(state, first=True)["devices"]
    if as_json:
        output.print_json(info)
    else:
        output.show(devices_table(info))


def _fetch(state: State, first: bool = False) -> dict[str, Any]:
    client = state.client(timeout=120.0 if first else 10.0)
    try:
        if first and not client.health().get("torch_ready", True):
            # The daemon answers devices only once torch is imported: seconds, after a boot.
            with output.activity("the daemon is still importing torch; waiting"):
                if not output.stderr_is_tty():
                    output.hint("the daemon is still importing torch; waiting for it")
                info = client.devices()
        else:
            info = client.devices()
        return {"devices": info, "models": client.list_models()}
    except DaemonNotRunning as exc:
        raise state.no_daemon(exc) from exc
    finally:
        client.close()


def frame(snapshot: dict[str, Any], note: str = "") -> RenderableType:
    """One screen of ``top``: devices, then models, then a status line."""
    from rich.console import Group
    from rich.text import Text

    now = datetime.now(UTC)
    rows = [[
        str(e.get("name")), str(e.get("device")), str(e.get("state") or "-"),
        format_bytes(entry_size(e)), output.ago(e.get("last_used_at"), now),
        str(e.get("requests", 0)), str(e.get("in_flight", 0)),
        entry_expiry(e, now),
    ] for e in snapshot["models"]]
    models = (output.make_table(TOP_MODEL_COLUMNS, rows,
                                drop=("REQUESTS", "LAST USED", "EXPIRES")) if rows
              else Text("no models loaded", style="dim"))
    stamp = datetime.now().strftime("%H:%M:%S")
    footer = Text(f"{stamp}  {note or 'Ctrl-C quits'}", style="dim")
    return Group(devices_table(snapshot["devices"]), Text(""), models, Text(""), footer)


def top(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    interval: Annotated[float, typer.Option(
        "--interval", "-n", min=0.1, metavar="SECONDS", help="Seconds between refreshes.")
    ] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Watch devices and models live until Ctrl-C. Never starts a daemon."""
    state = get_state(ctx)
    snapshot = _fetch(state, first=True)
    if as_json:
        output.print_json(snapshot)
        return
    if once:
        output.show(frame(snapshot, note=""))
        return
    from rich.live import Live

    try:
        with Live(frame(snapshot), console=output.console(), auto_refresh=False,
                  screen=False, redirect_stderr=False) as live:
            while True:
                time.sleep(interval)
                note = ""
                try:
                    snapshot = _fetch(state)
                except DaemonNotRunning:
                    note = "the daemon is not answering; retrying (Ctrl-C quits)"
                live.update(frame(snapshot, note), refresh=True)
    except KeyboardInterrupt:
        pass
