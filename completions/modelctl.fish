# fish completion for modelctl (`modelctl completion show fish`)
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
