"""``modelctl completion show|install``: completion scripts for bash, zsh and fish.

Every script sends the command line up to the cursor to ``modelctl`` itself
(``_MODELCTL_COMPLETE=SHELL _MODELCTL_COMPLETE_LINE=LINE modelctl``; responder.py answers
without importing typer), so candidates come from the app's own commands and the running
daemon. Python splits the line, which keeps words with ``:`` and ``/`` whole
(``cuda:0``, ``open_clip/ViT-B-32/laion2b_s34b_b79k``); bash has already split its
``COMP_WORDS`` at every ``:``, and readline replaces only the text after the last ``:``,
so the bash script trims that prefix from each candidate, as bash-completion's
``__ltrim_colon_completions`` does. Values that are paths (``--image FILE``) are left to
each shell's own file completion; nowhere else does a script fall back to file names.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from modelctl.cli import output
from modelctl.cli.params import help_without_command
from modelctl.errors import ModelctlError

app = typer.Typer()
app.callback(help="Shell completion for bash, zsh and fish.",
             invoke_without_command=True)(help_without_command)


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


# @FILES@ and @DIRS@ become the flags whose values are paths (complete.file_options()).
BASH = r"""# bash completion for modelctl (`modelctl completion show bash`)
_modelctl_completion() {
    local line="${COMP_LINE:0:COMP_POINT}"
    # The word being typed, whole (COMP_WORDS is split at ':' and '='), and the one before.
    local cur="${line##*[[:space:]]}"
    local before="${line%"$cur"}"
    before="${before%"${before##*[![:space:]]}"}"
    local opt="${before##*[[:space:]]}"
    if [[ $cur == -*=* ]]; then
        opt="${cur%%=*}"
        cur="${cur#*=}"
    fi
    local IFS=$'\n' c
    COMPREPLY=()
    # A path: bash's own file completion. Anywhere else, no candidates means none.
    case "$opt" in
        @FILES@)
            compopt -o filenames 2>/dev/null
            COMPREPLY=( $(compgen -f -- "$cur") )
            return 0 ;;
        @DIRS@)
            compopt -o filenames 2>/dev/null
            COMPREPLY=( $(compgen -d -- "$cur") )
            return 0 ;;
    esac
    local -a found
    found=( $(_MODELCTL_COMPLETE=bash _MODELCTL_COMPLETE_LINE="$line" "$1" 2>/dev/null) )
    # Readline replaces only the part of the word after its last ':'.
    local colon_prefix=""
    [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]] && colon_prefix="${cur%"${cur##*:}"}"
    for c in "${found[@]}"; do
        c="${c%%$'\t'*}"
        [[ -n $c ]] && COMPREPLY+=( "${c#"$colon_prefix"}" )
    done
    return 0
}
complete -F _modelctl_completion modelctl
"""

ZSH = r"""#compdef modelctl
# zsh completion for modelctl (`modelctl completion show zsh`)
_modelctl() {
    local opt c
    local -a found values descs
    if [[ $PREFIX == -*=* ]]; then
        opt=${PREFIX%%=*}
    else
        opt=${words[CURRENT-1]}
    fi
    # A path: zsh's own file completion. Anywhere else, no candidates means none.
    case $opt in
        (@FILES@)
            [[ $PREFIX == -*=* ]] && compset -P '*='
            _files
            return ;;
        (@DIRS@)
            [[ $PREFIX == -*=* ]] && compset -P '*='
            _files -/
            return ;;
    esac
    found=( ${(f)"$(_MODELCTL_COMPLETE=zsh \
        _MODELCTL_COMPLETE_LINE="${words[1,CURRENT-1]} ${PREFIX}" ${words[1]} 2>/dev/null)"} )
    for c in $found; do
        values+=( "${c%%$'\t'*}" )
        if [[ $c == *$'\t'* ]]; then
            descs+=( "${c%%$'\t'*}  -- ${c#*$'\t'}" )
        else
            descs+=( "$c" )
        fi
    done
    (( ${#values} )) || return 1
    [[ $PREFIX == -*=* ]] && compset -P '*='
    compadd -l -d descs -a values
}
if [[ "${funcstack[1]}" == _modelctl ]]; then
    _modelctl "$@"
else
    compdef _modelctl modelctl
fi
"""

FISH = r"""# fish completion for modelctl (`modelctl completion show fish`)
function __modelctl_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    set -l opt $tokens[-1]
    set -l prefix ''
    if string match -qr -- '^-[^=]*=' $cur
        set opt (string replace -r -- '=.*' '' $cur)
        set prefix "$opt="
        set cur (string replace -r -- '^[^=]*=' '' $cur)
    end
    # A path: fish's own file completion. Anywhere else, no candidates means none.
    if contains -- $opt @FILES@
        __fish_complete_path $cur | string replace -r -- '^' $prefix
    else if contains -- $opt @DIRS@
        __fish_complete_directories $cur | string replace -r -- '^' $prefix
    else
        env _MODELCTL_COMPLETE=fish _MODELCTL_COMPLETE_LINE=(commandline -cp) $tokens[1] \
            2>/dev/null | string replace -r -- '^' $prefix
    end
end
complete --command modelctl --no-files --arguments '(__modelctl_complete)'
"""

SCRIPTS = {Shell.bash: BASH, Shell.zsh: ZSH, Shell.fish: FISH}


def script(shell: Shell | str) -> str:
    """The completion script for ``shell``, with the app's path-valued flags filled in."""
    from modelctl.cli.completion.responder import file_options

    shell = Shell(shell)
    separator = " " if shell is Shell.fish else "|"
    text = SCRIPTS[shell]
    for kind, flags in file_options().items():
        text = text.replace(f"@{kind.upper()}@", separator.join(flags))
    return text


def install_path(shell: Shell, home: Path | None = None) -> Path:
    home = home or Path.home()
    data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    if shell is Shell.bash:
        return data / "bash-completion" / "completions" / "modelctl"
    if shell is Shell.zsh:
        return home / ".zfunc" / "_modelctl"
    return config / "fish" / "completions" / "modelctl.fish"


ShellArg = Annotated[Shell, typer.Argument(
    metavar="SHELL", case_sensitive=False, help="bash, zsh or fish.")]


@app.command("show")
def show(shell: ShellArg) -> None:
    """Print the completion script: save it, or `source <(modelctl completion show bash)`."""
    output.say(script(shell).rstrip("\n"))


@app.command("install")
def install(shell: Annotated[Shell | None, typer.Argument(
        metavar="SHELL", case_sensitive=False,
        help="bash, zsh or fish [default: the shell in $SHELL].")] = None) -> None:
    """Install the completion script where the shell looks for it."""
    if shell is None:
        name = Path(os.environ.get("SHELL") or "").name
        if name not in Shell.__members__:
            raise typer.BadParameter(f"cannot tell which shell {name or 'you use'} is; "
                                     "name it: modelctl completion install bash|zsh|fish",
                                     param_hint="SHELL")
        shell = Shell(name)
    path = install_path(shell)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script(shell))
    except OSError as exc:
        raise ModelctlError(f"cannot write {path}: {exc.strerror}; save the script yourself: "
                           f"modelctl completion show {shell.value} > FILE") from exc
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

