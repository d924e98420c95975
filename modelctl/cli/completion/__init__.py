"""Shell completion for bash, zsh and fish, in four parts.

- ``shell_scripts``: the scripts each shell sources and ``modelctl completion show|install``
  (the one part that imports typer, as every command does).
- ``responder``: answers a <TAB> (``_MODELCTL_COMPLETE`` set) without importing typer.
- ``sources``: where candidate values come from (the daemon, else this machine).
- ``tree``: the command tree, generated from the app's ``--help`` by
  ``scripts/gen-completions``.

Importing this package imports nothing: a <TAB> pays only for what it uses.
"""
