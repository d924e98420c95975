"""The model commands: ls, load, eject, pin, unpin and models (the registry)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelctl.cli import output
from modelctl.cli.params import (
    DeviceOpt,
    EngineOpt,
    JsonOpt,
    KeepAliveOpt,
    LoadedDeviceOpt,
    LoadedEngineOpt,
    LoadedModelArg,
    LoadedPrecisionOpt,
    ModelArg,
    OptionalLoadedModelArg,
    PrecisionOpt,
    duration_value,
    json_object_value,
    local_model_name,
    local_properties,
)
from modelctl.cli.state import State, get_state, static_registry
from modelctl.errors import DaemonNotRunning, DaemonUnreachable, ModelNotInCache
from modelctl.units import format_bytes

if TYPE_CHECKING:
    from modelctl.client import Client
    from modelctl.wire import CacheEntry, EjectedModel

# A load may download weights first: give it an hour before the CLI gives up waiting.
LOAD_TIMEOUT = 3600.0

ENTRY_COLUMNS: list[output.Column] = [
    ("NAME", "left"), ("DEVICE", "left"), ("VARIANT", "left"), ("FAMILY", "left"), ("DIM", "right"),
    ("STATE", "left"), ("SIZE", "right"), ("LOADED", "left"), ("LAST USED", "left"),
    ("REQUESTS", "right"), ("PIN", "left"), ("EXPIRES", "left"),
]


# What an 80-column terminal gives up first, in order (the name is cut last). VARIANT
# is kept while any entry is not the default torch/fp32 (two variants of one name on
# one device differ only there: the name is cut instead); otherwise it goes first.
ENTRY_DROP = ("LOADED", "FAMILY", "REQUESTS", "PIN", "DIM", "EXPIRES")


def entry_drop(entries: list[CacheEntry]) -> tuple[str, ...]:
    """ENTRY_DROP for these entries: VARIANT first when it says nothing, else never."""
    if all(entry_variant(e) == "torch/fp32" for e in entries):
        return ("VARIANT", *ENTRY_DROP)
    return ENTRY_DROP


def entry_variant(entry: Mapping[str, Any]) -> str:
    return f"{entry.get('engine') or 'torch'}/{entry.get('precision') or 'fp32'}"


def entry_size(entry: CacheEntry) -> int | None:
    """What the copy costs where it lives: allocator bytes on cuda, parameter bytes on cpu."""
    device_bytes = entry.get("device_bytes")
    if str(entry.get("device", "")).startswith("cuda") and device_bytes is not None:
        return int(device_bytes)
    size = entry.get("bytes")
    return int(size) if size is not None else None


def entry_expiry(entry: CacheEntry, now: datetime) -> str:
    """When keep-alive ejects it: never (pinned or no keep-alive), not while in use."""
    if entry.get("pinned") or entry.get("keep_alive") is None:
        return "never"
    if entry.get("in_flight"):
        return "in use"
    return output.until(entry.get("expires_at"), now)


def entry_family(entry: Mapping[str, Any]) -> str:
    """Marqo's type; ``(torch)`` when Marqo runs the name in another engine (ONNX)."""
    family = str(entry.get("family") or "-")
    return f"{family} (torch)" if entry.get("marqo_engine") else family


def entry_row(entry: CacheEntry, now: datetime | None = None) -> list[str]:
    now = now or datetime.now(UTC)
    pinned = bool(entry.get("pinned"))
    return [
        str(entry.get("name")), str(entry.get("device")), entry_variant(entry),
        entry_family(entry),
        str(entry.get("dimensions") or "-"), str(entry.get("state") or "-"),
        format_bytes(entry_size(entry)), output.ago(entry.get("loaded_at"), now),
        output.ago(entry.get("last_used_at"), now), str(entry.get("requests", 0)),
        "pinned" if pinned else "-",
        entry_expiry(entry, now),
    ]


def print_entries(entries: list[CacheEntry]) -> None:
    now = datetime.now(UTC)
    if any("replica" in e for e in entries):  # a cluster's fleet view: where each copy is
        output.print_table(FLEET_COLUMNS + ENTRY_COLUMNS, [
            [str(e.get("node") or "-"), str(e.get("replica") or "-"), *entry_row(e, now)]
            for e in entries], drop=("REPLICA", *entry_drop(entries)))
        return
    output.print_table(ENTRY_COLUMNS, [entry_row(e, now) for e in entries],
                       drop=entry_drop(entries))


FLEET_COLUMNS: list[output.Column] = [("NODE", "left"), ("REPLICA", "left")]

NodeOpt = Annotated[str | None, typer.Option(
    "--node", metavar="NODE",
    help="On a cluster: only this node (its Ray node name or node id prefix).")]


def _require_cluster(state: State, flag: str) -> None:
    """``flag`` means something only to a cluster: say so, rather than ignore it."""
    client = state.client(timeout=30.0)
    try:
        cluster = bool(client.health().get("cluster"))
    except DaemonNotRunning as exc:
        raise state.no_daemon(exc) from exc
    finally:
        client.close()
    if not cluster:
        raise typer.BadParameter("applies to a cluster only (`modelctl --url "
                                 "http://HEAD:PORT ...`, see `modelctl cluster`)",
                                 param_hint=flag)


def _loaded(state: State) -> list[CacheEntry] | None:
    """The loaded entries, or ``None`` when no daemon runs on this user's socket."""
    if state.surely_no_daemon():
        return None
    client = state.client(timeout=30.0)
    try:
        return client.list_models()
    except DaemonUnreachable:
        raise  # a daemon runs and refuses: not "nothing is loaded"
    except DaemonNotRunning as exc:
        if state.settings.url:  # a server named on purpose: not answering is an error
            raise state.no_daemon(exc) from exc
        return None
    finally:
        client.close()


def ls(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the loaded models. Never starts a daemon: with none running, nothing is loaded."""
    entries = _loaded(get_state(ctx))
    if as_json:
        output.print_json(entries or [])
    elif entries is None:
        output.hint("no modelctl daemon is running, so no models are loaded")
    elif not entries:
        output.hint("no models are loaded; load one with `modelctl load NAME`")
    else:
        print_entries(entries)


def load(
    ctx: typer.Context,
    name: ModelArg,
    device: DeviceOpt = None,
    pin: Annotated[bool, typer.Option(
        "--pin", help="Never evict or expire it; only `modelctl eject` removes it.")] = False,
    keep_alive: KeepAliveOpt = None,
    properties: Annotated[str | None, typer.Option(
        "--properties", metavar="JSON",
        help="A custom model's modelProperties (Marqo's shape), as JSON or @file.json.")] = None,
    precision: PrecisionOpt = None,
    engine: EngineOpt = None,
    copies: Annotated[int | None, typer.Option(
        "--copies", metavar="N", min=1, max=64,
        help="On a cluster: load it on N replicas (holders first, then the most free).")
    ] = None,
    node: NodeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load a model (starting the daemon if none runs) and show its entry."""
    props = local_properties(json_object_value(properties, "--properties"))
    name = local_model_name(name)
    seconds = duration_value(keep_alive, "--keep-alive")
    state = get_state(ctx)
    if copies is not None or node is not None:
        _require_cluster(state, "--copies" if copies is not None else "--node")
    client = state.started_client(timeout=LOAD_TIMEOUT)
    where = f" on {device}" if device else ""
    with output.activity(f"loading {name}{where}"):
        entry = client.load_model(name, device, pin=True if pin else None, keep_alive=seconds,
                                  properties=props, precision=precision, engine=engine,
                                  copies=copies, node=node)
    if as_json:
        output.print_json(entry)
    else:
        print_entries(entry.get("copies") or [entry])


def eject(
    ctx: typer.Context,
    name: OptionalLoadedModelArg = None,
    device: LoadedDeviceOpt = None,
    all_: Annotated[bool, typer.Option(
        "--all", help="Eject every model (on --device only, if given).")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Do not wait for requests in flight to finish.")] = False,
    precision: LoadedPrecisionOpt = None,
    engine: LoadedEngineOpt = None,
    node: NodeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Eject a model (every variant unless narrowed) and hand its memory back. Never
    starts a daemon."""
    if all_ and name:
        raise typer.BadParameter("give a NAME or --all, not both", param_hint="NAME")
    if not all_ and not name:
        raise typer.BadParameter("give the NAME of a loaded model, or --all", param_hint="NAME")
    state = get_state(ctx)
    if node is not None:
        _require_cluster(state, "--node")
    client = state.client()
    try:
        with output.activity(f"ejecting {name or 'every model'}"):
            result = client.eject(name, device, all=all_, force=force, precision=precision,
                                  engine=engine, node=node)
    except DaemonNotRunning as exc:
        raise state.no_daemon(exc, "so nothing is loaded") from exc
    except ModelNotInCache as exc:
        if not all_:
            raise _not_loaded(exc, name, client) from exc
        result = {"ejected": [], "bytes_freed": 0}
    if as_json:
        output.print_json(result)
        return
    ejected = result.get("ejected") or []
    if not ejected:
        output.hint("nothing was loaded, nothing was ejected")
    for item in ejected:
        freed = item.get("bytes_freed")
        if str(item.get("device", "")).startswith("cuda") and item.get("device_bytes_freed"):
            freed = item["device_bytes_freed"]
        tail = f", freed {format_bytes(freed)}" if freed is not None else ""
        where = f" on {item['node']}/{item.get('replica')}" if item.get("node") else ""
        output.say(f"ejected {item.get('name')} from {item.get('device')}{where}{tail}"
                   f"{freed_note(_size(item), freed, str(item.get('device')))}")


def _size(item: EjectedModel) -> int | None:
    """What ``ls`` showed as SIZE for an ejected copy (as ``entry_size``)."""
    if str(item.get("device", "")).startswith("cuda") and item.get("device_bytes") is not None:
        return item["device_bytes"]
    return item.get("bytes")


def freed_note(size: int | None, freed: int | None, device: str) -> str:
    """Why the memory that came back is not the SIZE `ls` showed, where it is not."""
    if not size or freed is None or abs(freed - size) <= size // 10:
        return ""
    if freed > size:
        return f" (more than its size, {format_bytes(size)}: buffers it had filled came back too)"
    if device.startswith("cuda"):
        return (f" (of {format_bytes(size)}: torch's allocator keeps what it reserved for reuse "
                "until another process needs it; not a leak)")
    return (f" (of {format_bytes(size)}: weights read from memory-mapped files and heap the "
            "allocator keeps count toward SIZE but leave RSS only when the system needs "
            "the memory; not a leak)")


def _not_loaded(exc: ModelNotInCache, name: str | None = None,
                client: Client | None = None) -> ModelNotInCache:
    guess = ""
    if name and client is not None:
        from modelctl.suggest import did_you_mean

        try:
            loaded = {str(e.get("name")) for e in client.list_models()}
        except Exception:  # the advice is a courtesy: never let it hide the error
            loaded = set()
        guess = did_you_mean(name, loaded)
    return ModelNotInCache(f"{exc.message}; {guess + ' ' if guess else ''}"
                           "`modelctl ls` shows what is loaded")


def _set_pin(ctx: typer.Context, name: str, device: str | None, pin: bool,
             as_json: bool) -> None:
    state = get_state(ctx)
    client = state.client(timeout=30.0)
    try:
        changed = client.update_model(name, device, pin=pin)
    except DaemonNotRunning as exc:
        raise state.no_daemon(exc, "so nothing is loaded") from exc
    except ModelNotInCache as exc:
        raise _not_loaded(exc, name, client) from exc
    if as_json:
        output.print_json(changed)
        return
    for entry in changed:
        output.say(f"{'pinned' if pin else 'unpinned'} {entry.get('name')} "
                   f"on {entry.get('device')}")


def pin(ctx: typer.Context, name: LoadedModelArg, device: LoadedDeviceOpt = None,
        as_json: JsonOpt = False) -> None:
    """Pin a loaded model: it is never evicted or expired, only ejected by hand."""
    _set_pin(ctx, name, device, True, as_json)


def unpin(ctx: typer.Context, name: LoadedModelArg, device: LoadedDeviceOpt = None,
          as_json: JsonOpt = False) -> None:
    """Unpin a loaded model: eviction and keep-alive apply to it again."""
    _set_pin(ctx, name, device, False, as_json)


REGISTRY_COLUMNS: list[output.Column] = [
    ("NAME", "left"), ("FAMILY", "left"), ("DIM", "right"), ("MODALITIES", "left"),
    ("OFFLINE", "left"), ("ALIASES", "left"),
]


def models(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the model names modelctl knows (the registry). Never starts a daemon."""
    state = get_state(ctx)
    client = state.client(timeout=30.0)
    try:
        entries = client.registry()
    except DaemonNotRunning as exc:
        if state.settings.url:
            raise state.no_daemon(exc) from exc
        static = static_registry()
        if static is None:
            raise state.no_daemon(DaemonNotRunning(
                "no modelctl daemon is running and the built-in registry is not installed"
            )) from None
        entries = static
        output.hint("no daemon is running: this is the built-in registry "
                    "(whether weights are on this machine is unknown)")
    finally:
        client.close()
    if as_json:
        output.print_json(entries)
        return
    offline = {True: "yes", False: "no", None: "?"}
    output.print_table(REGISTRY_COLUMNS, [
        [str(e.get("name")), entry_family(e), str(e.get("dimensions") or "-"),
         ",".join(e.get("modalities") or ()) or "-",
         "refused" if e.get("refused") else offline.get(e.get("available_offline"), "?"),
         ", ".join(e.get("aliases") or ()) or "-"]
        for e in entries], drop=("ALIASES", "MODALITIES", "OFFLINE", "DIM"))
