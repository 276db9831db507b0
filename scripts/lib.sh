# Shell helpers shared by the scripts that start development and test servers (sourced).

# Background processes must not inherit the caller's descriptors: a test runner's pipe held
# open by a server would never see end of file. Call in the subshell that execs the server.
close_inherited_fds() {
    local fd
    for fd in $(ls /proc/$BASHPID/fd 2>/dev/null); do
        if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
}
