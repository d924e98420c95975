"""Where completion candidates come from: the running daemon, else what this machine shows.

responder.py calls these on every <TAB>, so they are fast and silent (any failure means
"no candidates") and never start a daemon: with no socket file there is nothing to ask,
and the HTTP client is not even imported. Each candidate is ``(value, description)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from modelctl.cli.state import static_registry
from modelctl.config import Settings

if TYPE_CHECKING:
    from modelctl.client import Client
    from modelctl.wire import CacheEntry

T = TypeVar("T")
Candidate = tuple[str, str]

# A daemon that does not answer at once is treated as absent: a <TAB> must not hang.
TIMEOUT = 0.5

# One directory per NVIDIA GPU the driver sees (Linux): the devices a daemon would find.
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def _ask(settings: Settings, call: Callable[[Client], T]) -> T | None:
    """``call`` on the running daemon (or ``--url``); ``None`` when none answers."""
    if not settings.url and not settings.socket_path.exists():
        return None
    try:
        from modelctl.client import Client

        client = (Client(settings.url, api_key=settings.api_key, timeout=TIMEOUT)
                  if settings.url else Client(socket_path=settings.socket_path, timeout=TIMEOUT))
    except Exception:
        return None
    try:
        return call(client)
    except Exception:
        return None
    finally:
        client.close()


def _where(entries: list[CacheEntry]) -> dict[str, list[str]]:
    """Loaded name -> the devices it is loaded on, in load order."""
    found: dict[str, list[str]] = {}
    for entry in entries:
        found.setdefault(str(entry.get("name")), []).append(str(entry.get("device")))
    return found


def loaded_names(settings: Settings) -> list[Candidate]:
    """The names of the loaded models, as ``modelctl ls`` shows them."""
    entries = _ask(settings, lambda c: c.list_models()) or []
    return [(name, f"loaded on {', '.join(devices)}")
            for name, devices in _where(entries).items()]


def loaded_devices(settings: Settings, name: str | None) -> list[Candidate]:
    """The devices ``name`` is loaded on (by the name it was loaded by, or its canonical
    name); every device in use when there is no name."""
    entries = _ask(settings, lambda c: c.list_models()) or []
    found: dict[str, list[str]] = {}
    for entry in entries:
        if not name or name in (entry.get("name"), entry.get("canonical_name")):
            found.setdefault(str(entry.get("device")), []).append(str(entry.get("name")))
    return [(device, ", ".join(names)) for device, names in found.items()]


def model_names(settings: Settings) -> list[Candidate]:
    """Loaded models first (custom names too), then registry names and aliases.

    The registry comes from the daemon when one runs (it knows configured custom models),
    else from the one built in.
    """
    def fetch(client: Client) -> tuple[list[CacheEntry], list[dict[str, Any]]]:
        return client.list_models(), client.registry(offline=False)

    answer = _ask(settings, fetch)
    entries, registry = answer if answer is not None else ([], static_registry() or [])
    found: dict[str, str] = {
        name: f"loaded on {', '.join(devices)}" for name, devices in _where(entries).items()}
    for item in registry:
        name = str(item.get("name"))
        dims = f", {item['dimensions']} dims" if item.get("dimensions") else ""
        found.setdefault(name, f"{item.get('family') or 'model'}{dims}")
        for alias in item.get("aliases") or ():
            found.setdefault(str(alias), f"alias of {name}")
    return list(found.items())


def machine_devices(settings: Settings, environ: Mapping[str, str]) -> list[Candidate]:
    """``cpu``, ``cuda`` and each ``cuda:N``: as the running daemon sees them, else as the
    NVIDIA driver lists them (honouring ``CUDA_VISIBLE_DEVICES``)."""
    info = _ask(settings, lambda c: c.devices())
    found: list[Candidate] = [("cpu", "the CPU and system memory")]
    if info is not None:
        gpus = [(str(g.get("device")), str(g.get("name") or "GPU")) for g in info.get("cuda") or ()]
    else:
        gpus = [(f"cuda:{i}", "GPU") for i in range(_driver_gpus(environ))]
    if gpus:
        found.append(("cuda", f"the first GPU ({gpus[0][0]})"))
        found.extend(gpus)
    return found


def _driver_gpus(environ: Mapping[str, str]) -> int:
    try:
        count = sum(1 for _ in NVIDIA_GPUS.iterdir())
    except OSError:
        return 0
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return count
    shown = 0
    for item in visible.split(","):  # CUDA stops at the first empty or -1 entry
        if not item.strip() or item.strip() == "-1":
            break
        shown += 1
    return min(count, shown)

