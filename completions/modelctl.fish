# fish completion for modelctl (`modelctl completion show fish`)
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
    if contains -- $opt --socket --image -o --output
        __fish_complete_path $cur | string replace -r -- '^' $prefix
    else if contains -- $opt --runtime-dir
        __fish_complete_directories $cur | string replace -r -- '^' $prefix
    else
        env _MODELCTL_COMPLETE=fish _MODELCTL_COMPLETE_LINE=(commandline -cp) $tokens[1] \
            2>/dev/null | string replace -r -- '^' $prefix
    end
end
complete --command modelctl --no-files --arguments '(__modelctl_complete)'
