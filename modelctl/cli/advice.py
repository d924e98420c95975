"""What to do next, for errors whose message (the daemon's, or Marqo's wording) does not say.

The daemon's messages are part of the HTTP contract and stay as Marqo words them
("CUDA is not available on this instance"); the CLI adds the next step when it prints one.
"""

from __future__ import annotations

from modelctl import errors

# Most specific class first: the first match wins.
_STEPS: list[tuple[type[errors.ModelctlError], str]] = [
    (errors.HardwareCompatibilityError,
     "`modelctl devices` lists the devices this machine has (--device cpu always works)"),
    (errors.CacheManagementError,
     "`modelctl ls` shows what is loaded: eject or unpin something (`modelctl eject NAME`), "
     "or restart the daemon with a larger budget (--max-cpu-memory/--max-cuda-memory)"),
    (errors.Unauthorized, "give the server's key with --api-key KEY or MODELCTL_API_KEY"),
    (errors.PayloadTooLarge, "send fewer or smaller inputs (a smaller --batch-size)"),
    (errors.TooManyRequests, "retry shortly, or send smaller batches"),
    (errors.ServiceUnavailable, "run the command again in a moment"),
    (errors.NotFound, "is the server at --url a modelctl of this version? "
                      "(`modelctl --version`; `modelctl daemon status` shows the daemon's)"),
    (errors.MethodNotAllowed, "is the server at --url a modelctl of this version? "
                              "(`modelctl daemon status` shows the daemon's)"),
    (errors.InternalError, "`modelctl daemon logs` shows the daemon's side of it; "
                           "this is a bug in modelctl"),
    (errors.DaemonStartError, "`modelctl daemon logs` shows why"),
    (errors.DaemonUnreachable, "`modelctl daemon status` checks on it"),
]

# A message that already points somewhere needs no second pointer.
_ALREADY = ("`modelctl", "try again", "retry", "; set ", "; give ", "; use ", "; check ",
            "see ", "; pick ", "download", "; load ", "`kill", "eject or ", "free memory",
            "last lines of")


def next_step(exc: errors.ModelctlError) -> str | None:
    """The advice to append to ``exc``'s message, or ``None`` when it has its own."""
    lowered = exc.message.lower()
    if any(marker in lowered for marker in _ALREADY):
        return None
    if exc.message.startswith(("MODELCTL_", "MARQO_")):  # config.py names the variable
        return "fix or unset that environment variable (`man modelctl` lists them)"
    for cls, step in _STEPS:
        if isinstance(exc, cls):
            return step
    return None
