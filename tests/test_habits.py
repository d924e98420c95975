"""Command lines typed from ollama, lms, docker and OpenAI habits, without a daemon.

Verbs other tools use, typo suggestions that never point to the reverse action, a global
option given after the command, and ``--json`` errors as a JSON document.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelctl.cli.completion.tree import TREE
from modelctl.cli.habits import FOREIGN, suggestions
from tests.cli_runs import no_daemon_left, one_error_line, run

COMMANDS = list(TREE[""]["commands"])


def test_help_lists_the_aliases_as_aliases(offline_runtime: Path) -> None:
    help_text = run("--help").stdout
    lines = {line.split()[0]: line for line in help_text.splitlines()
             if line.startswith("  ") and line.split()}
    assert "Alias of ls" in lines["ps"]
    assert "Alias of eject" in lines["stop"] and "Alias of eject" in lines["unload"]
    assert "pull" in lines


@pytest.mark.parametrize("verb", ["stop", "unload"])
def test_stop_and_unload_eject(offline_runtime: Path, verb: str) -> None:
    result = run(verb, "all-MiniLM-L6-v2")
    # No daemon: nothing is loaded, said as eject says it (not "no such command").
    assert result.returncode == 3
    assert "so nothing is loaded" in one_error_line(result.stderr)
    assert run(verb).returncode == 2  # a NAME or --all, as eject
    assert no_daemon_left(offline_runtime)


@pytest.mark.parametrize(("typed", "meant", "never"), [
    ("unlod", "unload", "load"),
    ("unloa", "unload", "load"),
    ("unpn", "unpin", "pin"),
    ("pinn", "pin", "unpin"),
    ("laod", "load", "unload"),
    ("ejct", "eject", "load"),
    ("lss", "ls", None),
])
def test_typos_never_suggest_the_reverse(offline_runtime: Path, typed: str, meant: str,
                                         never: str | None) -> None:
    result = run(typed, "x")
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert f"no such command '{typed}'" in line and f"'{meant}'" in line
    if never:
        assert f"'{never}'" not in line


def test_every_removing_typo_stays_on_its_side() -> None:
    """A typo that starts like a removal is never offered an adding command."""
    adding = {"load", "pin", "pull", "serve"}
    for word in ("unlaod", "unloda", "unpi", "unpinn", "unlad", "rmove", "delod", "stopp"):
        assert not adding & set(suggestions(word, COMMANDS)), word


@pytest.mark.parametrize("verb", ["run", "rm", "rmi", "list", "start", "logs", "status"])
def test_other_tools_verbs_get_modelctls_way(offline_runtime: Path, verb: str) -> None:
    result = run(verb, "all-MiniLM-L6-v2")
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert FOREIGN[verb] in line
    assert no_daemon_left(offline_runtime)


def test_daemon_subcommand_typo(offline_runtime: Path) -> None:
    line = one_error_line(run("daemon", "stauts").stderr)
    assert "'status'" in line and "`modelctl daemon --help`" in line


@pytest.mark.parametrize(("args", "flag"), [
    (["ls", "--socket", "/tmp/x.sock"], "--socket"),
    (["devices", "--url=http://127.0.0.1:9"], "--url"),
    (["daemon", "status", "--runtime-dir", "/tmp"], "--runtime-dir"),
    (["ls", "--api-key", "k"], "--api-key"),
])
def test_global_option_after_the_command_gets_a_hint(offline_runtime: Path, args: list[str],
                                                     flag: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert f"{flag} is a global option: it goes before the command" in line
    assert f"`modelctl {flag} " in line


def test_a_commands_own_option_of_the_same_name_is_kept(offline_runtime: Path) -> None:
    # serve has an --api-key of its own (the server's key): no hint, Typer parses it.
    result = run("serve", "--api-key", "k", "--help")
    assert result.returncode == 0 and "--api-key" in result.stdout


@pytest.mark.parametrize(("args", "code", "kind"), [
    (["ls", "--json", "--bogus"], 2, "usage"),                 # Typer's own usage error
    (["lss", "--json"], 2, "usage"),                           # an unknown command
    (["ls", "--json", "--socket", "/x"], 2, "usage"),          # a misplaced global option
    (["devices", "--json"], 3, "daemon_not_running"),
    (["eject", "x", "--json"], 3, "daemon_not_running"),
    (["--url", "ftp://x", "ls", "--json"], 2, "usage"),
])
def test_json_errors_are_one_json_document_on_stderr(offline_runtime: Path, args: list[str],
                                                     code: int, kind: str) -> None:
    result = run(*args)
    assert result.returncode == code
    assert result.stdout == ""  # stdout carries data only
    error = json.loads(result.stderr)
    assert error["exit_code"] == code and error["error"]["code"] == kind
    assert error["error"]["message"]


def test_json_errors_from_the_daemon_keep_its_code(offline_runtime: Path) -> None:
    result = run("pull", "no-such-model", "--json")
    assert result.returncode == 1 and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert (error["code"], error["status"]) == ("invalid_argument", 400)


@pytest.mark.parametrize(("typed", "meant"), [
    ("all-minilm-l6-v2", "all-MiniLM-L6-v2"),
    ("ALL-MINILM-L12-V2", "all-MiniLM-L12-v2"),
    ("all-MiniLM-L12-v3", "all-MiniLM-L12-v2"),
    ("vit-b/32", "ViT-B/32"),
])
def test_near_model_names_suggest_the_right_one(offline_runtime: Path, typed: str,
                                                meant: str) -> None:
    line = one_error_line(run("pull", typed, env={"HF_HUB_OFFLINE": "1"}).stderr)
    assert f"unknown model '{typed}': did you mean '{meant}'" in line
