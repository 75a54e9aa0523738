"""Clients that speak the wire protocol: the test/load client and (later) the load runner."""
