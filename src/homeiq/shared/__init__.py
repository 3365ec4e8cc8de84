"""Code shared by every HomeIQ ingest process: settings, logging, the stream contract, events, health."""
