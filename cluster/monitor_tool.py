"""The original MonitoringClient tool's protocol on ``[monitor] tool_port`` (to be filled)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from cluster.config import Config

if TYPE_CHECKING:
    from cluster.monitor import Monitor


async def open_tool_port(config: Config, monitor: Monitor) -> asyncio.AbstractServer | None:
    """Listen for the original tool on ``monitor.tool_host:tool_port`` while ``monitor.tool_key``
    is set; None when it is not. Raises :class:`cluster.role.StartupError` if it cannot listen."""
    return None
