#!/usr/bin/env bash
# Starts and stops a local InfluxDB 1.x server (Debian's `influxdb` package, binary influxd) for
# development, tests and the demo, with its data in .tools/influx-PORT/ (git-ignored).
#
#   scripts/influx/influxd.sh start [DATABASE]   # HTTP API on 127.0.0.1:$SENTINEL_INFLUX_PORT (8086)
#   scripts/influx/influxd.sh stop               # stops it and deletes its data
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${SENTINEL_INFLUX_PORT:-8086}
rpc_port=${SENTINEL_INFLUX_RPC_PORT:-$((port + 1))}
state="$root/.tools/influx-$port"

stop() {
    if [ -f "$state/pid" ]; then
        kill "$(cat "$state/pid")" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$(cat "$state/pid")" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$(cat "$state/pid")" 2>/dev/null || true
    fi
    rm -rf "$state"
}

case "${1:-}" in
start)
    command -v influxd >/dev/null || { echo "influxd: not installed (apt-get install influxdb)" >&2; exit 1; }
    stop
    mkdir -p "$state"
    cat >"$state/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc_port"
[meta]
  dir = "$state/meta"
[data]
  dir = "$state/data"
  wal-dir = "$state/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
CONF
    ( close_inherited_fds; exec setsid influxd run -config "$state/influxdb.conf" </dev/null >"$state/influxd.log" 2>&1 ) &
    echo $! >"$state/pid"
    for _ in $(seq 1 150); do
        if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/ping', timeout=0.5)" 2>/dev/null; then
            if [ -n "${2:-}" ]; then
                python3 -c "import urllib.request,urllib.parse,sys; urllib.request.urlopen('http://127.0.0.1:$port/query', data=urllib.parse.urlencode({'q': 'CREATE DATABASE \"' + sys.argv[1] + '\"'}).encode(), timeout=5)" "$2"
            fi
            echo "influxd: listening on 127.0.0.1:$port" >&2
            exit 0
        fi
        sleep 0.1
    done
    echo "influxd: did not start; log:" >&2
    tail -n 20 "$state/influxd.log" >&2
    exit 1
    ;;
stop) stop ;;
*) echo "usage: $0 start [DATABASE] | stop" >&2; exit 2 ;;
esac
