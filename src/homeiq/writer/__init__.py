"""The writer: reads the stream in consumer group `writers`, writes InfluxDB, acks after 2xx."""
