"""``modelctl completion show|install``: completion scripts for bash, zsh and fish.

Every script asks ``modelctl`` itself for candidates through Typer's completion protocol
(``_MODELCTL_COMPLETE=complete_fish`` with ``_TYPER_COMPLETE_ARGS`` set to the command
line up to the cursor), so the candidates come from the same parameters and callbacks as
the commands. That protocol splits the line in Python, which keeps words with ``:`` and
``=`` whole (``cuda:0``, ``open_clip/ViT-B-32/laion2b_s34b_b79k``); Typer's own bash
script sends bash's ``COMP_WORDS``, which bash has already split at every ``:``. The bash
script then trims what readline takes as the word (the text after the last ``:``) from
each candidate, as bash-completion's ``__ltrim_colon_completions`` does.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from modelctl.cli import output

app = typer.Typer(help="Shell completion for bash, zsh and fish.", no_args_is_help=True)


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


BASH = r"""# bash completion for modelctl (`modelctl completion show bash`)
_modelctl_completion() {
    local line="${COMP_LINE:0:COMP_POINT}"
    local IFS=$'\n' c
    local -a found
    found=( $(env _MODELCTL_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=get-args \
                  _TYPER_COMPLETE_ARGS="$line" "$1" 2>/dev/null) )
    # The word Python completed; readline replaces only its part after the last ':'.
    local cur="${line##*[[:space:]]}"
    [[ $cur == -*=* ]] && cur="${cur#*=}"
    local colon_prefix=""
    [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]] && colon_prefix="${cur%"${cur##*:}"}"
    COMPREPLY=()
    for c in "${found[@]}"; do
        c="${c%%$'\t'*}"
        [[ -z $c ]] && continue
        COMPREPLY+=( "${c#"$colon_prefix"}" )
    done
    return 0
}
complete -o default -F _modelctl_completion modelctl
"""

ZSH = r"""#compdef modelctl
# zsh completion for modelctl (`modelctl completion show zsh`)
_modelctl() {
    local -a found values descs
    local c
    found=( "${(@f)$(env _MODELCTL_COMPLETE=complete_fish \
        _TYPER_COMPLETE_FISH_ACTION=get-args _TYPER_COMPLETE_ARGS="${words[1,CURRENT]}" \
        ${words[1]} 2>/dev/null)}" )
    for c in $found; do
        [[ -n $c ]] || continue
        values+=( "${c%%$'\t'*}" )
        if [[ $c == *$'\t'* ]]; then
            descs+=( "${c%%$'\t'*}  -- ${c#*$'\t'}" )
        else
            descs+=( "${c}" )
        fi
    done
    if (( ${#values} )); then
        [[ $PREFIX == -*=* ]] && compset -P '*='
        compadd -l -d descs -a values
    else
        _files
    fi
}
if [[ "${funcstack[1]}" == _modelctl ]]; then
    _modelctl "$@"
else
    compdef _modelctl modelctl
fi
"""

FISH = r"""# fish completion for modelctl (`modelctl completion show fish`)
function __modelctl_complete
    set -l found (env _MODELCTL_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=get-args \
        _TYPER_COMPLETE_ARGS=(commandline -cp) (commandline -opc)[1] 2>/dev/null \
        | string match -rv '^$')
    if test (count $found) -gt 0
        printf '%s\n' $found
    else
        __fish_complete_path (commandline -ct)
    end
end
complete --command modelctl --no-files --arguments '(__modelctl_complete)'
"""

SCRIPTS = {Shell.bash: BASH, Shell.zsh: ZSH, Shell.fish: FISH}

# Where `completion install` puts each script, and the file name the repository uses.
FILE_NAMES = {Shell.bash: "modelctl.bash", Shell.zsh: "_modelctl", Shell.fish: "modelctl.fish"}


def script(shell: Shell | str) -> str:
    """The completion script for ``shell``."""
    return SCRIPTS[Shell(shell)]


def install_path(shell: Shell, home: Path | None = None) -> Path:
    home = home or Path.home()
    data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    if shell is Shell.bash:
        return data / "bash-completion" / "completions" / "modelctl"
    if shell is Shell.zsh:
        return home / ".zfunc" / "_modelctl"
    return config / "fish" / "completions" / "modelctl.fish"


ShellArg = Annotated[Shell, typer.Argument(case_sensitive=False, help="bash, zsh or fish.")]


@app.command("show")
def show(shell: ShellArg) -> None:
    """Print the completion script (e.g. `source <(modelctl completion show bash)`)."""
    output.say(script(shell).rstrip("\n"))


@app.command("install")
def install(shell: Annotated[Shell | None, typer.Argument(
        case_sensitive=False, help="bash, zsh or fish [default: the shell in $SHELL].")
        ] = None) -> None:
    """Install the completion script where the shell looks for it."""
    if shell is None:
        name = Path(os.environ.get("SHELL") or "").name
        if name not in Shell.__members__:
            raise typer.BadParameter(f"cannot tell which shell {name or 'you use'} is; "
                                     "name it: modelctl completion install bash|zsh|fish",
                                     param_hint="SHELL")
        shell = Shell(name)
    path = install_path(shell)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script(shell))
    output.hint(f"installed {shell.value} completion in {path}")
    if shell is Shell.bash:
        output.hint("bash-completion loads it in new shells; without bash-completion, "
                    f"add `source {path}` to ~/.bashrc")
    elif shell is Shell.zsh:
        zshrc = Path.home() / ".zshrc"
        if ".zfunc" not in (zshrc.read_text() if zshrc.exists() else ""):
            output.hint("add `fpath+=(~/.zfunc); autoload -Uz compinit; compinit` "
                        "to ~/.zshrc, then open a new shell")
    else:
        output.hint("fish loads it in new shells")
