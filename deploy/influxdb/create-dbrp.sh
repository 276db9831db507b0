#!/bin/bash
# Runs once, when the influxdb container sets itself up: maps the InfluxQL database
# cmcd-metrics (retention policy autogen) to the bucket of the same name, so that the daemon's
# MCP tools and Grafana's InfluxQL datasource can query it through /query.
set -euo pipefail
bucket_id=$(influx bucket list --name "${DOCKER_INFLUXDB_INIT_BUCKET}" --org "${DOCKER_INFLUXDB_INIT_ORG}" --hide-headers | awk '{print $1}')
influx v1 dbrp create --db "${DOCKER_INFLUXDB_INIT_BUCKET}" --rp autogen --bucket-id "${bucket_id}" --default --org "${DOCKER_INFLUXDB_INIT_ORG}"
