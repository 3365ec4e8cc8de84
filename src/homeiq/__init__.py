"""HomeIQ ingest: Home Assistant events to InfluxDB through a Redis Stream (docs/architecture.md)."""
