"""Ports for private processes: never the same one twice in a process. A port picked for a process that binds it
later (Home Assistant binds seconds after it is configured) must not be handed to the next server started
meanwhile: that made Home Assistant fail to bind ("address already in use", the port held by a test's influxd)."""

from __future__ import annotations

from homeiq.local.services import free_port


def test_no_port_is_handed_out_twice() -> None:
    ports = [free_port() for _ in range(2000)]  # the kernel's bind(0) repeats itself well within this many
    assert len(set(ports)) == len(ports)
