#!/bin/bash
# The bash completion of clusterd, in real bash: subcommands, options, values, and program
# names from a daemon this test starts on its own control socket and state directory in a
# temporary directory (two built-in worker programs on free 127.0.0.1 ports). The daemon
# is stopped by its pid.
# Usage: test_bash_completion.sh COMPLETION_FILE BIN_DIR
set -uo pipefail

completion=${1:?usage: test_bash_completion.sh COMPLETION_FILE BIN_DIR}
bin=${2:?usage: test_bash_completion.sh COMPLETION_FILE BIN_DIR}
export PATH=$bin:$PATH

work=$(mktemp -d /tmp/clusterd-completion.XXXXXX)
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid"
        for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$daemon_pid" 2>/dev/null && kill -KILL "$daemon_pid"
        wait "$daemon_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=/dev/null
source "$completion"
if [ "$(complete -p clusterd 2>/dev/null)" != "complete -F _clusterd clusterd" ]; then
    echo "FAIL: sourcing $completion does not register _clusterd for clusterd"
    exit 1
fi

failed=0
# complete LINE: COMPREPLY for the cursor at the end of LINE (words split at blanks and,
# as bash does, around '='), sorted, space-separated. The completion must print nothing.
complete_line() {
    local line=$1
    local -a words
    read -ra words <<<"${line//=/ = }"
    [[ $line == *" " || $line == *"=" ]] && words+=("")
    COMP_WORDS=("${words[@]}")
    COMP_CWORD=$((${#words[@]} - 1))
    COMP_LINE=$line
    COMP_POINT=${#line}
    COMPREPLY=()
    _clusterd >"$work/out" 2>&1
    if [ -s "$work/out" ]; then
        echo "FAIL: completing \"$line\" printed: $(cat "$work/out")"
        failed=1
    fi
    printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | sort | tr '\n' ' ' | sed 's/ $//'
}

expect() {  # expect LINE EXPECTED
    local got
    got=$(complete_line "$1")
    if [ "$got" = "$2" ]; then
        echo "ok: \"$1\" -> $got"
    else
        echo "FAIL: \"$1\": expected \"$2\", got \"$got\""
        failed=1
    fi
}

# ---- without a daemon ----
expect "clusterd " "--help --version -h check events log-level logs reload restart run scale signal start status stop top upgrade version"
expect "clusterd logs --" "--config --follow --help --json --lines --socket"
expect "clusterd events --n" "--no-follow"
expect "clusterd logs -n " ""
expect "clusterd upgrade --" "--binary --config --help --json --socket"
expect "clusterd st" "start status stop"
expect "clusterd top --" "--config --help --interval --socket"
expect "clusterd top --interval " ""
expect "clusterd restart --r" "--rolling"
expect "clusterd run --" "--config --control --help --log-level --state-dir"
expect "clusterd status --w" "--watch"
expect "clusterd log-level " "debug error info trace warn"
expect "clusterd run --log-level w" "warn"
expect "clusterd run --log-level=d" "debug"
expect "clusterd signal web TT" "TTIN TTOU"
expect "clusterd signal web sigte" "SIGTERM"
expect "clusterd scale web " ""

mkdir "$work/configs"
touch "$work/configs/a.yaml" "$work/configs/b.yaml"
expect "clusterd check -c $work/configs/a" "$work/configs/a.yaml"
expect "clusterd status --config=$work/configs/b" "$work/configs/b.yaml"
expect "clusterd run --state-dir $work/conf" "$work/configs"

# No daemon on the socket typed: no program names, nothing printed, quickly.
start=$(date +%s%N)
expect "clusterd scale -s $work/none.sock " ""
expect "clusterd stop -c $work/configs/a.yaml " ""
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
if [ $elapsed_ms -gt 1500 ]; then
    echo "FAIL: completing without a daemon took ${elapsed_ms} ms"
    failed=1
fi

# ---- with a daemon: program names come from `clusterd status --json` ----
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
sock=$work/control.sock
cat >"$work/clusterd.yaml" <<YAML
daemon:
  control: $sock
  state_dir: $work/state
programs:
  alpha:
    cores: 1
    listen:
      - {name: http, address: "127.0.0.1:$(free_port)"}
  beta.api:
    cores: 1
    listen:
      - {name: http, address: "127.0.0.1:$(free_port)"}
YAML
clusterd run -c "$work/clusterd.yaml" </dev/null >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do
    [ -S "$sock" ] && clusterd status -s "$sock" >/dev/null 2>&1 && break
    sleep 0.1
done
if ! clusterd status -s "$sock" >/dev/null 2>&1; then
    echo "FAIL: the test daemon did not answer on $sock; its log:"
    cat "$work/daemon.log"
    exit 1
fi

expect "clusterd scale -s $sock " "alpha beta.api"
expect "clusterd scale --socket=$sock b" "beta.api"
expect "clusterd restart -c $work/clusterd.yaml " "alpha beta.api"
HOME=$work expect "clusterd stop --config=~/clusterd.yaml al" "alpha"
expect "clusterd status -s $sock a" "alpha"
expect "clusterd status --watch 2 -s $sock " "alpha beta.api"
expect "clusterd top -i 2 -s $sock " "alpha beta.api"
expect "clusterd signal -s $sock alpha H" "HUP"
expect "clusterd scale -s $sock alpha " ""
expect "clusterd status -s $work/cont" "$sock"
expect "clusterd status -s $work/configs/" ""

[ $failed -eq 0 ] && echo "PASS"
exit $failed
