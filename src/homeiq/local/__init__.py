"""Local stand-ins for production services: private redis-server and influxd processes, the whole pipeline."""
