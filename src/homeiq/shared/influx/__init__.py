"""Talking to InfluxDB: the sink, line protocol, the two schemas, batches from the stream, reading back."""
