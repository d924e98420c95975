"""The man page: generated from the app, complete, clean under groff, installed by pip.

Commands and options are discovered here from what ``modelctl ... --help`` prints, run
as a user would run it, independently of the generator's own parser.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelctl import cli, config

REPO = Path(__file__).resolve().parent.parent

PAGE = REPO / "man" / "modelctl.1"
BIN = Path(sys.executable).parent


def modelctl_help(*path: str) -> str:
    result = subprocess.run([sys.executable, "-m", "modelctl", *path, "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def discover(path: tuple[str, ...] = ()) -> dict[tuple[str, ...], set[str]]:
    """Every command path and the flags its help lists (the root: the global ones too)."""
    text = modelctl_help(*path)
    section = ""
    flags: set[str] = set()
    children: list[str] = []
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Za-z ]*:$", line):
            section = line
        elif not line.strip():
            section = "" if section in ("Options:", "Commands:") else section
        elif section == "Options:" or (not path and line.lstrip().startswith("--")):
            term = re.split(r" {2,}", line.strip())[0]
            flags.update(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", term))
        elif section == "Commands:" and re.match(r"^  \S", line):
            children.append(line.split()[0])
    found = {path: flags}
    for child in children:
        found.update(discover((*path, child)))
    return found


def source_text() -> str:
    """The page's text with roff escapes undone (``\\-`` -> ``-``, fonts dropped)."""
    text = PAGE.read_text()
    text = re.sub(r"\\f[BIRP]", "", text).replace("\\-", "-").replace("\\&", "")
    return text.replace("\\e", "\\")


def mentions(text: str, flag: str) -> bool:
    """``flag`` as a word of its own (``-d`` is not found inside ``--device``)."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def sections(text: str, marker: str) -> dict[str, str]:
    """Title -> body, for every ``.SH`` (marker ``.SH``) or ``.SS`` in ``text``."""
    parts = re.split(rf"^{re.escape(marker)} (.*)$", text, flags=re.MULTILINE)
    return {title.strip('"'): body for title, body in zip(parts[1::2], parts[2::2],
                                                           strict=True)}


def test_page_is_generated_from_the_app() -> None:
    result = subprocess.run([sys.executable, "scripts/gen-man", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + "\nrun scripts/gen-man"


def test_every_command_and_option_is_documented() -> None:
    surface = discover()
    assert len(surface) >= 17 and ("daemon", "start") in surface
    top = sections(source_text(), ".SH")
    commands = sections(top["COMMANDS"], ".SS")
    root_flags = surface.pop(())
    assert {"--socket", "--url", "--api-key", "--runtime-dir", "--version"} <= root_flags
    for flag in root_flags:
        assert mentions(top["GLOBAL OPTIONS"], flag), flag
    for path, flags in surface.items():
        body = commands[" ".join(path)]  # each command has its own section
        assert f"modelctl {' '.join(path)}" in body
        for flag in flags - {"-h", "--help"}:
            assert mentions(body, flag), f"{flag} of {path} is not in its section"


def test_environment_files_exit_status_and_examples() -> None:
    top = sections(source_text(), ".SH")
    # Every variable the code reads (the CLI's completion protocol aside).
    code = "\n".join(p.read_text() for p in (REPO / "modelctl").rglob("*.py"))
    variables = set(re.findall(r"\b((?:MODELCTL|MARQO)_[A-Z_]*[A-Z])\b", code))
    variables = {v for v in variables if not v.startswith("MODELCTL_COMPLETE")}
    assert {"MODELCTL_RUNTIME_DIR", "MARQO_MODELS_TO_PRELOAD"} <= variables
    for name in variables | {"NO_COLOR", "HF_HUB_OFFLINE", "XDG_RUNTIME_DIR"}:
        assert name in top["ENVIRONMENT"], name
    for name in (config.SOCKET_NAME, config.LOCK_NAME, config.STATUS_NAME, config.LOG_NAME):
        assert name in top["FILES"], name
    for code_ in (0, cli.EXIT_ERROR, cli.EXIT_USAGE, cli.EXIT_NO_DAEMON):
        assert re.search(rf"^\.TP\n{code_}\n", top["EXIT STATUS"], re.M), code_
    readme = (REPO / "README.md").read_text().split("## Everyday use", 1)[1]
    example = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    for line in example.strip().splitlines():
        assert line.rstrip() in top["EXAMPLES"], line


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff")
def test_renders_without_warnings(tmp_path: Path) -> None:
    groff = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(PAGE)],
                           capture_output=True, text=True, timeout=60)
    assert groff.returncode == 0 and groff.stderr == "", groff.stderr
    if shutil.which("man") is None:
        return
    for width in ("80", "200"):
        shown = subprocess.run(["man", "--warnings", "-l", str(PAGE)], capture_output=True,
                               text=True, timeout=60,
                               env={**os.environ, "MANWIDTH": width, "MAN_KEEP_FORMATTING": ""})
        assert shown.returncode == 0 and shown.stderr == "", shown.stderr
        assert "modelctl completion install" in shown.stdout


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man-db")
def test_pip_install_puts_it_where_man_finds_it(tmp_path: Path) -> None:
    """Installed into a fresh venv, the page lands in VENV/share/man/man1, where man-db
    finds it from VENV/bin on PATH without MANPATH. (Editable installs leave data files
    out: setuptools#3399.)"""
    source = tmp_path / "src"  # build from a copy: no build/ left in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("modelctl", "man"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip"]
    # Build with this venv's setuptools, install into a new venv with `pip --python`: a
    # plain `pip install --prefix` would first uninstall the modelctl of this venv.
    wheel = subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--no-index", "--wheel-dir", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert wheel.returncode == 0, wheel.stderr
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    install = subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install",
                              "--quiet", "--no-deps", "--no-index",
                              *map(str, (tmp_path / "dist").glob("*.whl"))],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    installed = venv / "share" / "man" / "man1" / "modelctl.1"
    assert installed.read_text() == PAGE.read_text()
    env = {k: v for k, v in os.environ.items() if k != "MANPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    found = subprocess.run(["man", "-w", "modelctl"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == installed
