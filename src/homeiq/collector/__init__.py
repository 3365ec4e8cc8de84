"""The collector: one Home Assistant WebSocket connection, every event XADDed to the stream."""
