"""The core every process shares: config, client codec, bus envelope, broker, CLI."""
