#!/bin/sh
# One-shot `influxdb-setup` for InfluxDB 1.x (the local image of compose.local.yaml): on first start the admin (the
# first user needs no login), the database, and the writers' user, which may write and read that database only
# (ALL on one database: a database holds one privilege, so a GRANT READ after a GRANT WRITE would replace it).
# Its password is random and goes only to the influxdb-token volume, as the v2 setup's token does.
set -eu
out=/run/homeiq/influxdb-password
if [ -s "$out" ]; then
    echo "influxdb-setup: the writers' user exists"
    exit 0
fi
until wget -q -O /dev/null http://influxdb:8086/ping; do sleep 0.5; done
influx -host influxdb -execute "CREATE USER admin WITH PASSWORD '$INFLUXDB_ADMIN_PASSWORD' WITH ALL PRIVILEGES"
export INFLUX_USERNAME=admin INFLUX_PASSWORD="$INFLUXDB_ADMIN_PASSWORD"
password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
for statement in "CREATE DATABASE \"$INFLUXDB_BUCKET\"" \
                 "CREATE USER \"$INFLUXDB_USERNAME\" WITH PASSWORD '$password'" \
                 "GRANT ALL ON \"$INFLUXDB_BUCKET\" TO \"$INFLUXDB_USERNAME\""; do
    influx -host influxdb -execute "$statement"
done
printf '%s' "$password" > "$out.new"
chmod 0444 "$out.new"
mv "$out.new" "$out"
echo "influxdb-setup: created user $INFLUXDB_USERNAME (write and read of $INFLUXDB_BUCKET only)"
