"""ha-sim: a Home Assistant WebSocket server that speaks the protocol exactly as HA does."""
