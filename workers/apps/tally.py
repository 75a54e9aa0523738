"""An example third app: a running tally per player, on the game port (docs/apps.md).

It shows the whole seam: two message types of its own (registered with the codec), a message
table, and handlers. The login is the echo game's (CS_GAME_REQ_LOGIN, the version and the key
checked by the runtime), so it subclasses :class:`~workers.apps.echo.EchoApp` for that and
replaces the rest. Run it with ``[game] app = "workers.apps.tally"``.

- 6001 CS_TALLY_REQ_ADD ``<Hqi``: AccountNo, Amount (int32) -> the player's total grows by it;
- 6002 CS_TALLY_RES_TOTAL ``<Hqq``: AccountNo, Total (int64), the answer to each ADD.

An AccountNo that is not the session's closes it (``account_mismatch``), like an echo's. The
tally lives as long as the session (a new login starts from 0).
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, NamedTuple

from cluster.config import Config
from cluster.messages import GameReqHeartbeat, GameReqLogin, MessageSpec, register
from workers.apps import Violation
from workers.apps.echo import EchoApp
from workers.host import PlayerSession


class _AddFields(NamedTuple):
    account_no: int
    amount: int


class TallyReqAdd(_AddFields):
    """6001 CS_TALLY_REQ_ADD, client -> game port."""

    __slots__ = ()
    TYPE: ClassVar[int] = 6001


class _TotalFields(NamedTuple):
    account_no: int
    total: int


class TallyResTotal(_TotalFields):
    """6002 CS_TALLY_RES_TOTAL, game port -> client."""

    __slots__ = ()
    TYPE: ClassVar[int] = 6002


register(MessageSpec(TallyReqAdd, struct.Struct("<qi")))
register(MessageSpec(TallyResTotal, struct.Struct("<qq")))


class TallyApp(EchoApp):
    """The echo game's login; ADD and heartbeat in game."""

    name = "tally"
    tracks_status = True

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.messages = frozenset({GameReqLogin.TYPE, TallyReqAdd.TYPE, GameReqHeartbeat.TYPE})
        self.handlers = {TallyReqAdd.TYPE: self.add, GameReqHeartbeat.TYPE: self.heartbeat}

    def joined(self, session: PlayerSession) -> None:
        session.state = 0  # this player's total

    def add(self, session: PlayerSession, fields: Any, packet: bytes | None) -> bytes:
        account_no, amount = fields
        if account_no != session.account_no:
            raise Violation("account_mismatch")
        session.state += amount
        assert self.host is not None
        return self.host.codec.encode(TallyResTotal(account_no, session.state))


def create(config: Config) -> TallyApp:
    return TallyApp(config)
