#!/bin/bash
# One-shot compose service `influxdb-setup`, on InfluxDB 2: creates the token the writers, the replayer and Grafana
# use. It may write and read the one bucket and nothing else. Created once, kept in the influxdb-token volume
# (never in .env, never printed); the operator's all-access token stays with the operator.
set -euo pipefail
out=/run/homeiq/influxdb-token
if [[ -s $out ]]; then
    echo "influxdb-setup: the writers' token exists"
    exit 0
fi
export INFLUX_HOST=http://influxdb:8086 INFLUX_TOKEN="$INFLUXDB_ADMIN_TOKEN" INFLUX_ORG="$INFLUXDB_ORG"
bucket_id=$(influx bucket list --name "$INFLUXDB_BUCKET" --hide-headers | cut -f1)
token=$(influx auth create --description "homeiq writers" --read-bucket "$bucket_id" --write-bucket "$bucket_id" \
        --json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
if [[ -z $token ]]; then
    echo "influxdb-setup: influx auth create gave no token" >&2
    exit 1
fi
printf '%s' "$token" > "$out.new"
chmod 0444 "$out.new" # read by the writers (uid 10001) and Grafana, which mount the volume read-only
mv "$out.new" "$out"
echo "influxdb-setup: created the writers' token (write and read of bucket $INFLUXDB_BUCKET only)"
