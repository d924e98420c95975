"""Shell completion, driven by real bash, zsh and fish, against a real daemon and none.

bash is driven twice: by calling the script's function with ``COMP_LINE``/``COMP_POINT``
set (what it offers), and interactively in a pseudo-terminal (what readline then does to
the line: names with ``/`` and ``:`` must end up whole, and no candidates must leave the
line alone rather than fall back to file names). zsh runs interactively with its
completion system (compinit), its ``compadd`` wrapped to record what the script offers;
fish answers ``complete -C``. The daemon holds MiniLM and the tiny CLIP model under a name
with ``/`` and ``:``.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelctl.cli.completion.responder import SOURCES, file_options
from modelctl.cli.completion.tree import TREE
from modelctl.testing import MINILM, Daemon, base_env

REPO = Path(__file__).resolve().parent.parent

BIN = Path(sys.executable).parent
CLIP = "org/tiny:clip"
SCRIPTS = {"bash": REPO / "completions" / "modelctl.bash",
           "zsh": REPO / "completions" / "_modelctl",
           "fish": REPO / "completions" / "modelctl.fish"}

# bash is required; zsh and fish are tested where they are installed (Debian: zsh, fish).
HAVE_FISH = shutil.which("fish") is not None
LINE_EDITORS = ["bash"] + (["zsh"] if shutil.which("zsh") else [])

pytestmark = pytest.mark.skipif(not (BIN / "modelctl").exists(),
                                reason="needs the modelctl console script (pip install -e .)")


def shell_env(runtime_dir: Path, home: Path) -> dict[str, str]:
    """The environment a user's shell would have: modelctl on PATH, our runtime dir."""
    env = base_env(runtime_dir)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}", HOME=str(home),
               TERM="xterm", PS1="$ ", XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local" / "share"))
    return env


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """$HOME for the shells, and their working directory: ``work/``, which holds one file."""
    path = Path(tempfile.mkdtemp(prefix="mc-home-"))
    (path / "work").mkdir()
    (path / "work" / "only-file.txt").write_text("for file completion\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def served(daemon: Daemon, tiny_clip: dict[str, Any]) -> Iterator[Daemon]:
    """The shared daemon with two models loaded, one under a name with '/' and ':'."""
    daemon.client.eject(all=True, force=True)
    daemon.client.load_model(MINILM, "cpu")
    daemon.client.load_model(CLIP, "cpu", properties=tiny_clip)
    yield daemon
    daemon.client.eject(all=True, force=True)


@pytest.fixture
def absent() -> Iterator[Path]:
    """A runtime dir where no daemon runs (and which must never be created)."""
    parent = Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))
    yield parent / "rt"
    shutil.rmtree(parent, ignore_errors=True)


# -- drivers -------------------------------------------------------------------------------
def engine(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One request, as the scripts send it."""
    return subprocess.run(["modelctl"], env={**env, "_MODELCTL_COMPLETE": "bash",
                                             "_MODELCTL_COMPLETE_LINE": line},
                          capture_output=True, text=True, timeout=30)


def values(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.split("\t")[0] for line in result.stdout.splitlines()]


def bash_reply(line: str, env: dict[str, str], cwd: Path) -> tuple[int, list[str]]:
    """COMPREPLY from the bash script's function, called as readline would call it."""
    probe = f"""
        source {SCRIPTS['bash']}
        COMP_LINE=$1; COMP_POINT=${{#1}}
        read -ra COMP_WORDS <<< "$1"; COMP_CWORD=${{#COMP_WORDS[@]}}
        _modelctl_completion modelctl
        echo "rc=$?"
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", probe, "bash", line],
                            env=env, cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.stderr == "", result.stderr
    status, *reply = result.stdout.splitlines()
    return int(status.removeprefix("rc=")), [r for r in reply if r]


def fish_reply(line: str, env: dict[str, str], cwd: Path) -> list[str] | None:
    """What fish offers (``complete -C``); ``None`` where fish is not installed."""
    if not HAVE_FISH:
        return None
    result = subprocess.run(
        ["fish", "--no-config", "-c", f"source {SCRIPTS['fish']}; complete -C $argv[1]", line],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [c.split("\t")[0] for c in result.stdout.splitlines()]


class Interactive:
    """bash or zsh at a prompt in a pseudo-terminal, our script loaded as a user would.

    ``tab(text)`` types ``text`` and <TAB>, and returns what the script offered (recorded
    by a wrapper) and the line as the shell left it (read back by a key binding).
    """

    def __init__(self, shell: str, env: dict[str, str], cwd: Path, scratch: Path) -> None:
        self.out, self.buffer = scratch / f"{shell}-out.txt", scratch / f"{shell}-buf.txt"
        ready = scratch / f"{shell}-ready.txt"
        if shell == "bash":
            argv = ["bash", "--norc", "--noprofile", "-i"]
            # Wrap the function, not the `complete` spec: the script's own options
            # (no `-o default`) must stay in force.
            setup = f"""
source {SCRIPTS['bash']}
eval "$(declare -f _modelctl_completion | sed '1s/_modelctl_completion/_modelctl_orig/')"
_modelctl_completion() {{ _modelctl_orig "$@"; local r=$?; printf '%s\\n' "${{COMPREPLY[@]}}" '<done>' >> {self.out}; return $r; }}
bind -x '"\\C-t": printf "%s\\n" "$READLINE_LINE" > {self.buffer}'
echo ready > {ready}
"""  # noqa: E501
        else:
            argv = ["zsh", "-f", "-i"]
            setup = f"""
autoload -Uz compinit && compinit -u -D
source {SCRIPTS['zsh']}
compadd() {{ local -a found; builtin compadd -O found "$@"; print -rl -- $found >> {self.out}; builtin compadd "$@" }}
functions[_modelctl_orig]=$functions[_modelctl]
_modelctl() {{ _modelctl_orig "$@"; local r=$?; print -r -- '<done>' >> {self.out}; return r }}
_capture() {{ print -r -- "$BUFFER" > {self.buffer} }}; zle -N _capture; bindkey '^T' _capture
print ready > {ready}
"""  # noqa: E501
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     cwd=cwd, start_new_session=True)
        os.close(slave)
        self.screen = b""
        self._send(setup)
        self._wait(ready, "ready")

    def tab(self, text: str) -> tuple[list[str], str]:
        self.out.write_text("")
        self.buffer.unlink(missing_ok=True)
        self._send(text + "\t")
        offered = self._wait(self.out, "<done>").splitlines()[:-1]
        self._send("\x14")  # Ctrl-T: write the line to self.buffer
        line = self._wait(self.buffer, "\n").rstrip("\n")
        self._send("\x15")  # Ctrl-U: clear the line for the next one
        return [o for o in offered if o], line

    def _send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def _wait(self, path: Path, marker: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while select.select([self.master], [], [], 0)[0]:  # keep the terminal drained
                try:
                    self.screen += os.read(self.master, 65536)
                except OSError:
                    break
            if path.exists() and marker in (text := path.read_text()):
                return text
            time.sleep(0.02)
        raise AssertionError(f"the shell did not answer; screen:\n{self.screen[-3000:]!r}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)


@pytest.fixture
def interactive(tmp_path: Path, home: Path) -> Iterator[Any]:
    opened: list[Interactive] = []

    def start(shell: str, env: dict[str, str]) -> Interactive:
        session = Interactive(shell, env, home / "work", tmp_path)
        opened.append(session)
        return session

    yield start
    for session in opened:
        session.close()


# -- the scripts and the spec ----------------------------------------------------------------
def test_generated_files_match_the_app(home: Path, absent: Path) -> None:
    """Regenerates spec and scripts from the app; fails when a checked-in one drifted."""
    check = subprocess.run([sys.executable, "scripts/gen-completions", "--check"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr + "\nrun scripts/gen-completions"
    env = shell_env(absent, home)
    for shell, path in SCRIPTS.items():
        shown = subprocess.run(["modelctl", "completion", "show", shell], env=env,
                               capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0 and shown.stdout == path.read_text()


def test_every_value_has_a_source() -> None:
    """Every option value and argument says where it completes from (SOURCES), and no
    entry of SOURCES names something the app does not have."""
    wanted = set()
    for path, node in TREE.items():
        for names, metavar, _ in node["options"]:
            if metavar:
                wanted.add((path, next(n for n in names if n.startswith("--"))))
        wanted.update((path, metavar) for metavar, _, _ in node["arguments"])
    assert wanted - set(SOURCES) == set(), "add these to responder.SOURCES"
    assert set(SOURCES) - wanted == set(), "responder.SOURCES names what the app lacks"
    for (path, key), kind in SOURCES.items():
        if kind == "choices":
            assert any(a[0] == key and a[2] for a in TREE[path]["arguments"])


def test_path_flags_take_paths_everywhere() -> None:
    """The scripts match path flags by name alone: no flag may mean something else elsewhere."""
    paths = {flag for flags in file_options().values() for flag in flags}
    assert {"--image", "--output", "-o", "--socket", "--runtime-dir"} <= paths
    for path, node in TREE.items():
        for names, metavar, _ in node["options"]:
            kind = SOURCES.get((path, next(n for n in names if n.startswith("--"))), "")
            if set(names) & paths:
                assert metavar and kind in ("files", "dirs"), (path, names)


def test_install(home: Path, absent: Path, tmp_path: Path) -> None:
    env = {**shell_env(absent, tmp_path), "SHELL": "/usr/bin/fish"}
    result = subprocess.run(["modelctl", "completion", "install"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "modelctl.fish" in result.stderr
    path = tmp_path / ".config" / "fish" / "completions" / "modelctl.fish"
    assert path.read_text() == SCRIPTS["fish"].read_text()
    for shell, where in (("zsh", tmp_path / ".zfunc" / "_modelctl"),
                         ("bash", tmp_path / ".local/share/bash-completion/completions/modelctl")):
        assert subprocess.run(["modelctl", "completion", "install", shell], env=env,
                              capture_output=True, timeout=30).returncode == 0
        assert where.read_text() == SCRIPTS[shell].read_text()
    unknown = subprocess.run(["modelctl", "completion", "install"],
                             env={**env, "SHELL": "/bin/tcsh"}, capture_output=True, text=True,
                             timeout=30)
    assert unknown.returncode == 2 and "modelctl completion install bash|zsh|fish" in \
        unknown.stderr


# -- without a daemon ------------------------------------------------------------------------
def test_commands_and_options_without_a_daemon(home: Path, absent: Path) -> None:
    env = shell_env(absent, home)
    assert values(engine("modelctl l", env)) == ["ls", "load"]
    top = values(engine("modelctl --", env))
    assert top == ["--socket", "--url", "--api-key", "--runtime-dir", "--version", "--help"]
    assert values(engine("modelctl daemon ", env)) == ["start", "stop", "status",
                                                       "close-listener", "logs"]
    assert values(engine("modelctl eject --", env)) == ["--device", "--all", "--force",
                                                         "--precision", "--engine", "--node",
                                                         "--json", "--help"]
    assert values(engine("modelctl completion show ", env)) == ["bash", "zsh", "fish"]
    assert values(engine("modelctl --socket /x embed --help ", env)) == []
    # No daemon: the built-in registry, and the devices the NVIDIA driver lists.
    assert "ViT-L/14" in values(engine("modelctl load ViT-L/", env))
    assert values(engine("modelctl load open_clip/ViT-B-32/laion2b_s", env)) == [
        "open_clip/ViT-B-32/laion2b_s34b_b79k"]
    assert values(engine("modelctl load x --device=c", env))[0] == "cpu"
    assert not absent.exists()


@pytest.mark.parametrize("line", ["modelctl eject ", "modelctl eject x --device ",
                                  "modelctl pin ", "modelctl unpin org/",
                                  "modelctl --runtime-dir /nonexistent eject "])
def test_nothing_and_no_daemon_when_none_runs(home: Path, absent: Path, line: str) -> None:
    env = shell_env(absent, home)
    result = engine(line, env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert bash_reply(line, env, home) == (0, [])
    assert fish_reply(line, env, home) in ([], None)
    assert not absent.exists(), "completion created the runtime dir"


def test_interactive_shells_without_a_daemon(home: Path, absent: Path,
                                             interactive: Any) -> None:
    """No candidates leave the line alone (no fallback to file names); path options do
    complete file names."""
    env = shell_env(absent, home)
    for shell in LINE_EDITORS:
        session = interactive(shell, env)
        assert session.tab("modelctl eject ") == ([], "modelctl eject "), shell
        offered, line = session.tab("modelctl embed x --image on")
        assert line.rstrip() == "modelctl embed x --image only-file.txt", shell
    assert not absent.exists()


# -- with a daemon ---------------------------------------------------------------------------
def test_eject_offers_the_loaded_models(served: Daemon, home: Path) -> None:
    env = shell_env(served.runtime_dir, home)
    result = engine("modelctl eject ", env)
    assert result.returncode == 0 and result.stderr == ""
    assert sorted(values(result)) == sorted([MINILM, CLIP])
    for line in result.stdout.splitlines():  # candidates only: value, tab, description
        assert line.split("\t")[0] in (MINILM, CLIP) and line.count("\t") == 1
    assert bash_reply("modelctl eject ", env, home) == (0, [MINILM, CLIP])
    if HAVE_FISH:
        assert sorted(fish_reply("modelctl eject ", env, home) or []) == sorted([MINILM, CLIP])


def test_devices(served: Daemon, home: Path) -> None:
    env = shell_env(served.runtime_dir, home)
    assert values(engine(f"modelctl eject {CLIP} --device ", env)) == ["cpu"]
    assert values(engine(f"modelctl eject {MINILM} -d c", env)) == ["cpu"]
    assert values(engine("modelctl eject nothing-loaded --device ", env)) == []
    assert bash_reply(f"modelctl eject {CLIP} --device ", env, home) == (0, ["cpu"])
    if HAVE_FISH:
        assert fish_reply(f"modelctl eject {CLIP} --device ", env, home) == ["cpu"]
        assert (fish_reply("modelctl load x --device=c", env, home) or [])[0] == "--device=cpu"
    machine = values(engine("modelctl load x --device ", env))
    assert machine[0] == "cpu" and all(d == "cuda" or d.startswith("cuda:") for d in machine[1:])
    assert served.client.health()["torch_ready"]
    gpus = served.client.devices().get("cuda") or []
    assert len(machine) == 1 + (1 + len(gpus) if gpus else 0)


def test_load_offers_registry_names_aliases_and_loaded_models(served: Daemon,
                                                              home: Path) -> None:
    env = shell_env(served.runtime_dir, home)
    names = values(engine("modelctl load ", env))
    assert names[:2] == [MINILM, CLIP]  # loaded first, custom names too
    assert {"all-MiniLM-L6-v2", "hf/all-MiniLM-L6-v2", "ViT-L/14",
            "open_clip/ViT-B-32/laion2b_s34b_b79k"} <= set(names)
    assert len(names) == len(set(names))
    assert values(engine("modelctl embed org/", env)) == [CLIP]
    assert values(engine("modelctl serve --preload ViT-L/14@", env)) == ["ViT-L/14@336px"]


def test_names_with_slash_and_colon_complete_whole(served: Daemon, home: Path,
                                                   interactive: Any) -> None:
    env = shell_env(served.runtime_dir, home)
    # bash's COMP_WORDBREAKS holds ':': readline replaces only what follows it.
    assert bash_reply("modelctl eject org/tiny:", env, home) == (0, ["clip"])
    assert fish_reply("modelctl eject org/tiny:c", env, home) in ([CLIP], None)
    for shell in LINE_EDITORS:
        session = interactive(shell, env)
        offered, line = session.tab("modelctl eject ")
        assert sorted(offered) == sorted([MINILM, CLIP]), shell
        for typed in ("modelctl eject org/t", "modelctl eject org/tiny:c"):
            _, line = session.tab(typed)
            assert line == f"modelctl eject {CLIP} ", (shell, typed, line)
        _, line = session.tab("modelctl load open_clip/ViT-B-32/laion2b_s")
        assert line == "modelctl load open_clip/ViT-B-32/laion2b_s34b_b79k ", shell
        _, line = session.tab("modelctl load ViT-L/1")
        assert line.startswith("modelctl load ViT-L/14"), shell
        _, line = session.tab(f"modelctl eject {CLIP} --device c")
        assert line == f"modelctl eject {CLIP} --device cpu ", shell
        _, line = session.tab("modelctl load x --device=c")
        assert line == "modelctl load x --device=cpu ", shell
    assert served.alive()
