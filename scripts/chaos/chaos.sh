#!/usr/bin/env bash
# The fault battery (see chaos.py): kill -9 cycles, sink outages and a broker outage against the
# real servers; prints lost, invented and repeated findings and notifications, and the records
# re-read per restart. Exits 1 if anything was lost or invented.
#
#   scripts/chaos/chaos.sh                                   # full: 20 cycles, 2,000 sessions, SQLite
#   scripts/chaos/chaos.sh --store postgres                  # the same with the alerts in PostgreSQL
#   scripts/chaos/chaos.sh --cycles 5 --sessions 300         # the short version .ci/run runs
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build --product cmcd-sentinel >&2
mkdir -p .tools
exec python3 scripts/chaos/chaos.py "$@"
