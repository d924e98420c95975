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
    from rich.table import Table

    from modelctl.wire import DevicesReport

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


def devices_table(info: DevicesReport) -> Table:
    caption = None
    if not info.get("cuda_available") and info.get("cuda_error"):
        caption = f"cuda: {info['cuda_error']}"
    return output.make_table(DEVICE_COLUMNS, device_rows(info), caption=caption)


def devices(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show memory, budgets and use of the cpu and each GPU. Never starts a daemon."""
    state = get_state(ctx)
    info = _fetch(state)["devices"]
    if as_json:
        output.print_json(info)
    else:
        output.show(devices_table(info))


def _fetch(state: State) -> dict[str, Any]:
    client = state.client(timeout=10.0)
    try:
        return {"devices": client.devices(), "models": client.list_models()}
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
    models = (output.make_table(TOP_MODEL_COLUMNS, rows) if rows
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
    snapshot = _fetch(state)
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
