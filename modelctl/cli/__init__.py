"""The ``modelctl`` command line: ``main()``, its one error boundary; the app is in application.py.

Importing this package must stay cheap. A shell's completion request (``_MODELCTL_COMPLETE``
set) is answered by completion/responder.py without importing typer at all; a command
imports the app (typer and small stdlib-only modules); the HTTP client is imported when
a command talks to a daemon, rich where something is drawn, numpy where a ``.npy`` is
written, and the daemon's stack only by ``serve``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from modelctl.cli import global_options, habits
from modelctl.errors import DaemonError, ModelctlError, UsageError

__all__ = ["EXIT_ERROR", "EXIT_NO_DAEMON", "EXIT_USAGE", "app", "main", "make_app"]

# Exit codes: 0 ok, 1 an error, 2 a usage error (Typer's), 3 no daemon to talk to.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
COMPLETE_VAR = "_MODELCTL_COMPLETE"


def __getattr__(name: str) -> Any:
    # `from modelctl.cli import app` still works; only commands pay for building it.
    if name in ("app", "make_app"):
        from modelctl.cli import application

        return getattr(application, name)
    raise AttributeError(f"module 'modelctl.cli' has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; the one place where errors become a message and an exit code.

    ``ModelctlError`` -> one line ``modelctl: error: ...`` on stderr, exit 1, exit 2 for
    a ``UsageError``, or exit 3 for a ``DaemonError`` (the client maps every transport
    failure into that tree). An ``OSError`` that escapes is the machine's (a file we
    cannot write): its own words, exit 1. Anything else is a bug: one line too, and the
    traceback with ``MODELCTL_DEBUG=1``. A completion request prints candidates only and
    always exits 0.
    """
    if os.environ.get(COMPLETE_VAR):
        from modelctl.cli.completion.responder import respond

        respond()
        sys.exit(0)
    args = sys.argv[1:] if argv is None else list(argv)
    global _as_json
    _as_json = "--json" in args[:args.index("--")] if "--" in args else "--json" in args
    try:
        given, args = global_options.split(args)
        habits.check(args)
        from modelctl.cli.application import app, help_defaults

        if not _as_json:
            app(args=args, prog_name="modelctl", obj=given, default_map=help_defaults(app))
            return
        # Usage errors come back as exceptions, to be written as JSON below.
        code = app(args=args, prog_name="modelctl", obj=given,
                   default_map=help_defaults(app), standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except habits.HabitError as exc:  # its message says where to look
        _fail(exc, exc.message, EXIT_USAGE)
    except UsageError as exc:
        _fail(exc, f"{exc.message}; see `modelctl --help`", EXIT_USAGE)
    except DaemonError as exc:
        _fail(exc, _with_next_step(exc), EXIT_NO_DAEMON)
    except ModelctlError as exc:
        _fail(exc, _with_next_step(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # stdout's: the client turns its own into DaemonNotRunning
        _quiet_stdout()
        sys.exit(EXIT_ERROR)
    except Exception as exc:
        if _is_usage_error(exc):  # Typer's, raised rather than printed under --json
            _fail(exc, exc.format_message(), int(exc.exit_code))  # type: ignore[attr-defined]
        if isinstance(exc, OSError) and exc.strerror:  # the machine's, not a bug of ours
            where = f": {exc.filename}" if exc.filename else ""
            _fail(exc, f"{exc.strerror}{where}", EXIT_ERROR)
        _fail(exc, f"unexpected {type(exc).__name__}: {exc} (this is a bug in modelctl; "
                   "MODELCTL_DEBUG=1 shows the traceback)", EXIT_ERROR)


def _with_next_step(exc: ModelctlError) -> str:
    from modelctl.cli.advice import next_step

    step = next_step(exc)
    return f"{exc.message}; {step}" if step else exc.message


def _is_usage_error(exc: Exception) -> bool:
    """A usage error as Typer raises it (``format_message`` and ``exit_code``)."""
    return callable(getattr(exc, "format_message", None)) and \
        isinstance(getattr(exc, "exit_code", None), int)


# Whether the command line asked for --json: its errors are then a JSON document too.
_as_json = False


def _fail(exc: BaseException, message: str, code: int) -> None:
    if _debug():
        import traceback

        traceback.print_exception(exc)
    from modelctl.cli.output import printable_lines

    try:
        if _as_json:
            sys.stderr.write(_json_error(exc, message, code) + "\n")
        else:
            sys.stderr.write(f"modelctl: error: {printable_lines(message)}\n")
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    sys.exit(code)


def _json_error(exc: BaseException, message: str, code: int) -> str:
    """``{"error": {message, code, type, status}, "exit_code": N}``, on one line."""
    import json

    from modelctl.errors import ApiError

    if isinstance(exc, ApiError):
        kind = {"code": exc.code, "type": exc.type, "status": exc.status}
    elif code == EXIT_USAGE:
        kind = {"code": "usage", "type": "usage_error", "status": None}
    elif code == EXIT_NO_DAEMON:
        kind = {"code": "daemon_not_running", "type": "daemon_error", "status": None}
    else:
        kind = {"code": "error", "type": "error", "status": None}
    return json.dumps({"error": {"message": message, **kind}, "exit_code": code})


def _debug() -> bool:
    try:
        from modelctl.cli.state import build_settings

        return build_settings().debug
    except Exception:
        return False


def _quiet_stdout() -> None:
    """After a reader closed the pipe (``modelctl embed ... | head``), exit without noise."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())

