# bash completion for modelctl (`modelctl completion show bash`)
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
        --socket|--image|-o|--output)
            compopt -o filenames 2>/dev/null
            COMPREPLY=( $(compgen -f -- "$cur") )
            return 0 ;;
        --runtime-dir)
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
