# bash completion for modelctl (`modelctl completion show bash`)
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
