#!/usr/bin/env bash
# The main job end to end on this machine: start a local Kafka-protocol broker, InfluxDB and a
# webhook receiver, replay the bundled sample data into a topic, run the daemon over it with
# every sink (InfluxDB, the alerts table in SQLite, signed webhooks), print the findings on
# stdout and what each sink holds on stderr.
# Needs Swift, librdkafka-dev, influxdb (influxd) and python3; .ci/run installs them. Without
# influxd the InfluxDB sink is left out (and said so).
set -euo pipefail
cd "$(dirname "$0")/.."
export SENTINEL_BROKER_PORT=${SENTINEL_BROKER_PORT:-9092}
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
# InfluxDB and the webhook receiver are the demo's own: free ports, so an InfluxDB already
# running on 8086 is left alone.
export SENTINEL_INFLUX_PORT=${SENTINEL_INFLUX_PORT:-$(free_port)}
export SENTINEL_INFLUX_RPC_PORT=${SENTINEL_INFLUX_RPC_PORT:-$(free_port)}
receiver_port=${SENTINEL_DEMO_WEBHOOK_PORT:-$(free_port)}
brokers="127.0.0.1:$SENTINEL_BROKER_PORT"
topic=cmcd-demo-$$
work=.tools/demo-$$
secret=whsec_ZGVtby1zZWNyZXQtb25seS1mb3ItdGhlLWRlbW8=   # a demo secret; use your own

swift build --product cmcd-sentinel >&2
bin=$(swift build --show-bin-path)/cmcd-sentinel
mkdir -p "$work"
receiver_pid=""
cleanup() {
    [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true
    scripts/influx/influxd.sh stop 2>/dev/null || true
    scripts/broker/broker.sh stop
    rm -rf "$work"
}
trap cleanup EXIT

scripts/broker/broker.sh start "$topic" 4
influx_section=""
if command -v influxd >/dev/null; then
    scripts/influx/influxd.sh start cmcd-metrics
    influx_section="influx: {url: \"http://127.0.0.1:$SENTINEL_INFLUX_PORT\", database: cmcd-metrics, flush_interval_ms: 200}"
else
    echo "demo: influxd not installed (apt-get install influxdb): InfluxDB sink left out" >&2
fi
python3 scripts/webhook/receiver.py --port "$receiver_port" --secret "$secret" --log "$work/deliveries.jsonl" 2>/dev/null &
receiver_pid=$!
cat >"$work/sentinel.yaml" <<YAML
$influx_section
alerts: {url: "sqlite:$work/alerts.db"}
webhooks:
  - {name: default, url: "http://127.0.0.1:$receiver_port/hook", secret: "$secret"}
http: {listen: ""}
YAML

"$bin" replay --brokers "$brokers" --topic "$topic" samples/demo-sessions.tsv
# The daemon prints findings on stdout as it finds them; here it stops once the topic is
# drained and the viewers' pages, held 30 s in case an incident folds them (group_wait_ms),
# went out (a deployment runs it until SIGTERM).
"$bin" run --config "$work/sentinel.yaml" --brokers "$brokers" --topic "$topic" --group demo-$$ --exit-when-idle 34 \
    --partitions 0,1,2,3

python3 - "$work" "$SENTINEL_INFLUX_PORT" "${influx_section:+yes}" >&2 <<'PY'
import json, sqlite3, sys, urllib.parse, urllib.request
work, port, influx = sys.argv[1], sys.argv[2], sys.argv[3]
print("== what the sinks hold")
if influx:
    q = urllib.parse.urlencode({"db": "cmcd-metrics", "q": "SELECT count(cmcd_v) FROM cloudfront_logs; SELECT count(id) FROM cmcd_anomalies"})
    r = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/query?{q}", timeout=5))["results"]
    count = lambda i: r[i]["series"][0]["values"][0][1] if r[i].get("series") else 0
    print(f"InfluxDB cmcd-metrics: {count(0)} requests in cloudfront_logs, {count(1)} findings in cmcd_anomalies")
db = sqlite3.connect(f"{work}/alerts.db")
for status, n in db.execute("SELECT status, COUNT(*) FROM alerts GROUP BY status ORDER BY status"):
    print(f"alerts table: {n} {status}")
for state, n in db.execute("SELECT state, COUNT(*) FROM notifications GROUP BY state ORDER BY state"):
    print(f"webhook outbox: {n} {state}")
lines = [json.loads(l) for l in open(f"{work}/deliveries.jsonl")] if __import__("os").path.exists(f"{work}/deliveries.jsonl") else []
for d in lines:
    f = d["body"]["finding"]
    print(f"webhook received ({'signature ok' if d['signature_valid'] else 'BAD SIGNATURE'}): {d['body']['type']} {f['type']} {f['severity']} {f['session_id']}: {f['summary']}")
PY
