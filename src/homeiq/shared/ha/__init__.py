"""Talking to Home Assistant: its WebSocket client, frames, registries, recorder history and settings."""
