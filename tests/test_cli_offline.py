"""The CLI without a daemon: help, errors and exit codes, completion, import hygiene.

Every test runs with its own ``MODELCTL_RUNTIME_DIR`` (never the user's) and checks that
commands which must not start a daemon leave no socket behind.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelctl import __version__
from modelctl.cli import global_options, main, output
from modelctl.cli.models import entry_row
from modelctl.cli.state import State
from tests.cli_runs import ROOT, no_daemon_left, one_error_line, run

HEAVY = ("torch", "transformers", "sentence_transformers", "open_clip", "fastapi",
         "uvicorn", "pynvml", "numpy", "ray")


# -- help and version ---------------------------------------------------------------------
def test_help_lists_commands_and_global_options(offline_runtime: Path) -> None:
    result = run("--help")
    assert result.returncode == 0
    for word in ("ls", "load", "eject", "embed", "models", "devices", "top", "serve",
                 "daemon", "completion", "--socket PATH", "--url URL", "--version"):
        assert word in result.stdout
    assert "--install-completion" not in result.stdout


@pytest.mark.parametrize("args", [[], ["daemon"], ["completion"]])
def test_no_arguments_shows_help(offline_runtime: Path, args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"Usage: modelctl {' '.join(args)}".rstrip())
    assert "Commands:" in result.stdout


def test_help_documents_exit_codes(offline_runtime: Path) -> None:
    text = " ".join(run("--help").stdout.split())
    assert "Exit status: 0 success, 1 error, 2 usage error, 3 no daemon reachable." in text


def test_version(offline_runtime: Path) -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == f"modelctl {__version__}\n"


def test_command_help(offline_runtime: Path) -> None:
    result = run("eject", "--help")
    assert result.returncode == 0
    assert "--all" in result.stdout and "--force" in result.stdout


# -- without a daemon ---------------------------------------------------------------------
def test_ls_without_daemon(offline_runtime: Path) -> None:
    result = run("ls", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == []
    plain = run("ls")
    assert plain.returncode == 0 and plain.stdout == ""
    assert "no modelctl daemon is running" in plain.stderr
    assert run("ps", "--json").stdout.strip() == "[]"
    assert no_daemon_left(offline_runtime)


def test_ls_with_stale_socket(offline_runtime: Path) -> None:
    offline_runtime.mkdir(mode=0o700)
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(offline_runtime / "modelctl.sock"))  # bound, never listening: refused
    try:
        result = run("ls", "--json")
    finally:
        sock.close()
    assert result.returncode == 0 and json.loads(result.stdout) == []


@pytest.mark.parametrize("args", [["devices"], ["devices", "--json"], ["eject", "x"],
                                  ["eject", "--all"], ["pin", "x"], ["daemon", "status"],
                                  ["daemon", "stop"], ["top", "--once"]])
def test_commands_that_need_a_daemon_exit_3(offline_runtime: Path, args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    if "--json" in args:  # the error is a JSON document, on stderr
        error = json.loads(result.stderr)
        assert error["exit_code"] == 3 and error["error"]["code"] == "daemon_not_running"
        assert "no modelctl daemon is running" in error["error"]["message"]
    else:
        one_error_line(result.stderr)
    assert no_daemon_left(offline_runtime)


def test_devices_error_says_what_to_do(offline_runtime: Path) -> None:
    line = one_error_line(run("devices").stderr)
    assert "no modelctl daemon is running" in line and "modelctl daemon start" in line


def test_models_without_daemon_uses_the_builtin_registry(offline_runtime: Path) -> None:
    result = run("models", "--json")
    if result.returncode == 3:  # the daemon package (and its registry) is not installed
        one_error_line(result.stderr)
        return
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert entries and all(e["available_offline"] is None for e in entries)
    assert "sentence-transformers/all-MiniLM-L6-v2" in {e["name"] for e in entries}
    assert no_daemon_left(offline_runtime)


@pytest.mark.parametrize("args", [
    ["eject"],                                   # neither NAME nor --all
    ["eject", "x", "--all"],                     # both
    ["load", "m", "--keep-alive", "soon"],
    ["load", "m", "--properties", "{not json"],
    ["load", "m", "--properties", "[1]"],
    ["load", "m", "--properties", "@/nonexistent/props.json"],
    ["embed", "m", "--batch-size", "0"],
    ["embed", "m", "--image", "/nonexistent.png"],
    ["embed", "m"],                              # stdin has no lines
    ["serve", "--max-cpu-memory", "lots"],
    ["--socket"],
    ["--url", "ftp://example.org", "ls"],
])
def test_usage_errors_exit_2_and_start_nothing(offline_runtime: Path, args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert no_daemon_left(offline_runtime)


def test_unreachable_url_exits_3(offline_runtime: Path) -> None:
    result = run("--url", "http://127.0.0.1:9", "ls", "--json")
    assert result.returncode == 3 and result.stdout == ""
    assert json.loads(result.stderr)["error"]["code"] == "daemon_not_running"


@pytest.mark.parametrize(("args", "env", "code", "step"), [
    (["--url", "http://127.0.0.1:9", "ls"], {}, 3, "check the URL"),
    (["--url", "http://127.0.0.1:9", "models"], {}, 3, "check the URL"),
    (["daemon", "stop"], {}, 3, "nothing to stop"),
    (["eject", "x"], {}, 3, "so nothing is loaded"),
    (["daemon", "start"], {"MODELCTL_MAX_QUEUE": "x"}, 1,
     "fix or unset that environment variable"),
    (["--socket"], {}, 2, "see `modelctl --help`"),
])
def test_errors_say_what_to_do_next(offline_runtime: Path, args: list[str], env: dict[str, str],
                                    code: int, step: str) -> None:
    result = run(*args, env=env)
    assert result.returncode == code
    assert step in one_error_line(result.stderr)


def test_daemon_errors_get_a_next_step() -> None:
    """The daemon's messages keep Marqo's wording; the CLI adds what to do."""
    from modelctl import errors
    from modelctl.cli.advice import next_step

    assert "modelctl devices" in (next_step(errors.HardwareCompatibilityError(
        "CUDA is not available on this instance")) or "")
    assert "modelctl daemon logs" in (next_step(errors.InternalError("boom")) or "")
    assert "--api-key" in (next_step(errors.Unauthorized("missing key")) or "")
    assert "--batch-size" in (next_step(errors.PayloadTooLarge("3000 inputs")) or "")
    assert "modelctl eject" in (next_step(errors.CacheManagementError(
        "out of memory on cuda while loading x: CUDA out of memory")) or "")
    # Messages that already say what to do get nothing more.
    for exc in (errors.CacheManagementError("not enough memory on cpu ...; eject or unpin a "
                                            "model, or raise the budget"),
                errors.InvalidArgument("unknown model 'x': `modelctl models` lists the known "
                                       "names"),
                errors.TooManyRequests("x has 9000 inputs queued; retry shortly"),
                errors.ModelNotInCache("The model_name `x` is not cached or found; `modelctl "
                                       "ls` shows what is loaded")):
        assert next_step(exc) is None, exc


_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def _colours(text: str) -> list[int]:
    """The colour parameters (foreground or background) of every SGR sequence in ``text``."""
    found = []
    for params in _SGR.findall(text):
        for p in (int(x) for x in params.split(";") if x):
            if 30 <= p <= 49 or 90 <= p <= 107:
                found.append(p)
    return found


def test_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelctl.cli.devices import devices_table

    info = {"cpu": {"cores": 2, "memory_used": 8, "memory_total": 10, "models_bytes": 1,
                    "budget": 5, "usage_percent": 50.0}, "cuda": [], "cuda_available": False}

    def render() -> str:
        buffer = io.StringIO()
        output.make_console(file=buffer, width=120).print(devices_table(info))
        return buffer.getvalue()

    monkeypatch.setenv("FORCE_COLOR", "1")  # as on a terminal
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert _colours(render())  # the usage bar is coloured by level
    monkeypatch.setenv("NO_COLOR", "1")
    plain = render()
    assert _colours(plain) == [] and "80%" in plain


def test_daemon_logs_without_log(offline_runtime: Path) -> None:
    result = run("daemon", "logs")
    assert result.returncode == 1
    assert "no daemon log" in one_error_line(result.stderr)


def test_bad_environment_is_one_line(offline_runtime: Path) -> None:
    # A daemon's knob is the daemon's to reject: `ls` works, `daemon start` says why not.
    assert run("ls", env={"MODELCTL_MAX_CPU_MEMORY": "lots"}).returncode == 0
    result = run("daemon", "start", env={"MODELCTL_MAX_CPU_MEMORY": "lots"})
    assert result.returncode == 1
    assert "MODELCTL_MAX_CPU_MEMORY" in one_error_line(result.stderr)


def test_unexpected_errors_are_one_line_unless_debug(
        offline_runtime: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def broken(self: State, timeout: float | None = 0) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(State, "client", broken)
    with pytest.raises(SystemExit) as exit_info:
        main(["devices"])
    assert exit_info.value.code == 1
    assert "RuntimeError: boom" in one_error_line(capsys.readouterr().err)
    monkeypatch.setenv("MODELCTL_DEBUG", "1")
    with pytest.raises(SystemExit):
        main(["devices"])
    assert "Traceback (most recent call last)" in capsys.readouterr().err


# -- import hygiene and speed ---------------------------------------------------------------
def test_cli_imports_nothing_heavy(offline_runtime: Path) -> None:
    """``--help`` and ``ls --json`` import no model stack, no rich, and no pydantic."""
    code = textwrap.dedent("""
        import contextlib, io, json, sys
        from modelctl.cli import main
        for argv in (["--help"], ["ls", "--json"], ["devices"], ["cluster", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()), \\
                    contextlib.redirect_stderr(io.StringIO()):
                try:
                    main(argv)
                except SystemExit:
                    pass
        print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env=dict(os.environ), timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    # Typer would import pydantic (~40 ms) for options that are not flags; rich is only
    # needed to draw tables. Neither belongs on these paths.
    assert "pydantic" not in loaded
    assert "rich" not in loaded
    assert no_daemon_left(offline_runtime)


# -- completion (the shells themselves: test_completion.py) -------------------------------
def test_completion_request_is_silent_and_light(offline_runtime: Path) -> None:
    """A completion request imports no typer, rich or pydantic, prints only candidates,
    and starts nothing."""
    code = textwrap.dedent("""
        import json, os, sys
        from modelctl.cli import main
        try:
            main()
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))
        sys.stderr.write(json.dumps(heavy))
    """)
    for line in ("modelctl eject ", "modelctl load x --device ", "modelctl l",
                 "modelctl --bogus ", "modelctl eject 'unclosed", "modelctl embed x\\"):
        result = subprocess.run(
            [sys.executable, "-c", code, *HEAVY, "typer", "rich", "pydantic", "click"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "_MODELCTL_COMPLETE": "bash", "_MODELCTL_COMPLETE_LINE": line})
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stderr) == [], line
        for candidate in result.stdout.splitlines():
            assert candidate and "\t" not in candidate.split("\t", 1)[0]
    assert no_daemon_left(offline_runtime) and not offline_runtime.exists()


def test_completion_of_a_bad_line_is_empty(offline_runtime: Path) -> None:
    from modelctl.cli.completion.responder import candidates, split_line

    assert split_line("modelctl eject 'org/ti") == (["modelctl", "eject"], "org/ti")
    assert split_line("modelctl eject ") == (["modelctl", "eject"], "")
    assert split_line("") == ([], "")
    env = {"MODELCTL_RUNTIME_DIR": str(offline_runtime)}
    for line in ("", "modelctl", "modelctl nope ", "modelctl eject --device", "modelctl -- ",
                 "modelctl --socket", "modelctl ls --help ", "x\\"):
        assert isinstance(candidates(line, env), list)
    assert candidates("modelctl bogus ", env) == []
    assert candidates("modelctl ls --help ", env) == []
    assert [c for c, _ in candidates("modelctl", env)] == []


# -- pieces ---------------------------------------------------------------------------------
def test_global_options_split() -> None:
    given, rest = global_options.split(["--socket", "/s", "--url=http://h:1", "--version",
                                        "serve", "--api-key", "k"])
    assert given.socket == Path("/s") and given.url == "http://h:1"
    assert given.api_key is None  # after the command's name: the command's own option
    assert rest == ["--version", "serve", "--api-key", "k"]
    with pytest.raises(global_options.GlobalOptionError):
        global_options.split(["--runtime-dir"])


def test_times_for_people() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    iso = (now - timedelta(minutes=3, seconds=5)).isoformat().replace("+00:00", "Z")
    assert output.ago(iso, now) == "3m ago"
    assert output.ago(None, now) == "-"
    assert output.until((now + timedelta(seconds=250)).isoformat(), now) == "in 4m"
    assert output.until(None, now) == "never"


def test_entry_row_and_table_render() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    entry = {"name": "ViT-L/14", "device": "cuda:0", "family": "clip", "dimensions": 768,
             "state": "ready", "bytes": 10, "device_bytes": 90_000_000,
             "loaded_at": "2025-12-31T23:57:00Z", "last_used_at": None, "requests": 3,
             "pinned": True, "expires_at": None}
    row = entry_row(entry, now)
    assert row == ["ViT-L/14", "cuda:0", "torch/fp32", "clip", "768", "ready", "85.8 MiB",
                   "3m ago", "-", "3", "pinned", "never"]
    buffer = io.StringIO()
    output.use_console(output.make_console(file=buffer, width=120))
    try:
        output.print_table([("NAME", "left"), ("SIZE", "right")], [["a", "1 B"]])
    finally:
        output.use_console(None)
    assert buffer.getvalue() == "NAME  SIZE\na      1 B\n"
