#!/bin/sh
# The add-on's only process: reads /data/options.json, checks it (a wrong option stops the start here, named, exit
# 2), then runs Redis (data in /data/redis), the collector (spool in /data/spool), the writer and the replayer.
exec /opt/homeiq/bin/python -m homeiq.local.addon
