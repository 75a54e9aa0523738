"""The sector chat (the original set's ChatServer) as an app of the worker runtime.

Rules (docs/protocol.md, "Chat port"): CS_CHAT_REQ_LOGIN opens a session; in GAME mode
CS_CHAT_REQ_SECTOR_MOVE puts the player in a sector of the SECTOR_MAX x SECTOR_MAX grid (a
coordinate outside it closes the session: ``sector_out_of_range``) and is answered with
RES_SECTOR_MOVE; CS_CHAT_REQ_MESSAGE is said in the player's sector and reaches, as
CS_CHAT_RES_MESSAGE, every player in the 3 x 3 sectors around it, the sender included; a player
that has entered no sector yet is heard by nobody (counted as ``message_no_sector``); an
AccountNo that is not the session's closes it (``account_mismatch``); CS_CHAT_REQ_HEARTBEAT only
keeps the session alive (its gateway's idle timer). A player saying more than ``[chat]
message_rate`` messages per second (as many in a burst) is closed (``chat_flood``): every message
is written to everyone around, so one flooder would otherwise bury its neighbours' sockets.

**Fan-out across workers.** Players are placed on chat workers by account, not by sector, so the
players around a sector may be on every worker. A message is encoded once, on the sender's
worker, which writes it to its own players in the 3 x 3 sectors (one DELIVER item per gateway:
the packet and their session ids) and sends it once to every other chat worker (a CAST item
through the broker, with the sector), each of which does the same for its own players. So each
receiver gets it exactly once (it is on exactly one worker), and in the sender's order (one
worker handles all of a sender's packets in order, and the links between two peers keep order).
A sector move is handled in order with the messages of the same player: it takes effect for the
next message the worker handles. docs/architecture.md ("Chat") says why this design and what it
costs.
"""

from __future__ import annotations

import time
from array import array
from typing import Any

from cluster import bus
from cluster.config import Config
from cluster.messages import (
    CHAT_CLIENT_MESSAGES,
    SECTOR_MAX,
    ChatReqHeartbeat,
    ChatReqLogin,
    ChatReqMessage,
    ChatReqSectorMove,
    ChatResLogin,
    ChatResMessage,
    ChatResSectorMove,
)
from cluster.stats import Rates
from workers.apps import App, Violation
from workers.host import PlayerSession

CAST = bus.Control.CAST
RES_LOGIN, RES_MOVE, RES_MESSAGE = ChatResLogin.TYPE, ChatResSectorMove.TYPE, ChatResMessage.TYPE
#: Cell index -> the cells of the 3 x 3 sectors around it (fewer at the edges).
NEIGHBOURS: tuple[tuple[int, ...], ...] = tuple(
    tuple(
        nx * SECTOR_MAX + ny
        for nx in range(max(0, x - 1), min(SECTOR_MAX, x + 2))
        for ny in range(max(0, y - 1), min(SECTOR_MAX, y + 2))
    )
    for x in range(SECTOR_MAX)
    for y in range(SECTOR_MAX)
)


class Player:
    """A chat session's state: the names it logged in with, its sector cell (-1: none), and its
    message allowance (a token bucket: `tokens` as of `refreshed`)."""

    __slots__ = ("cell", "nickname", "refreshed", "tokens", "user_id")

    def __init__(self, user_id: str, nickname: str, tokens: float) -> None:
        self.user_id = user_id
        self.nickname = nickname
        self.cell = -1
        self.tokens = tokens
        self.refreshed = time.monotonic()


class ChatApp(App):
    """The sector map of this worker's players, and the message fan-out."""

    name = "chat"
    peer_types = frozenset({CAST})
    drop_reasons = ("sector_out_of_range", "chat_flood")

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.rate = config.chat.message_rate
        self.messages = CHAT_CLIENT_MESSAGES
        self.login_type = ChatReqLogin.TYPE
        self.handlers = {
            ChatReqSectorMove.TYPE: self.sector_move,
            ChatReqMessage.TYPE: self.message,
            ChatReqHeartbeat.TYPE: self.heartbeat,
        }
        #: cell -> gateway -> session ids of this worker's players in that sector (ordered sets)
        self.cells: dict[int, dict[bytes, dict[int, None]]] = {}
        self.players = 0
        self.said = 0  # messages handled (MessageTPS)
        self.deliveries = 0  # RES_MESSAGE written, counted per receiver
        self.cast_in = 0
        self.cast_out = 0
        self.unheard = 0  # messages of players in no sector
        self._rates = Rates()

    # -- sessions --------------------------------------------------------------------------------

    def login(self, session: PlayerSession, fields: list[Any]) -> tuple[int, bytes, str]:
        account_no, user_id, nickname, session_key = fields
        session.state = Player(user_id, nickname, self.rate)
        return account_no, session_key, ""

    def login_reply(self, account_no: int, reason: str) -> list[Any]:
        return [RES_LOGIN, 0 if reason else 1, account_no]

    def joined(self, session: PlayerSession) -> None:
        self.players += 1

    def left(self, session: PlayerSession) -> None:
        self.players -= 1
        self._leave_cell(session, session.state)

    def _leave_cell(self, session: PlayerSession, player: Player) -> None:
        if player.cell < 0:
            return
        cell = self.cells[player.cell]
        sids = cell[session.gateway]
        del sids[session.sid]
        if not sids:
            del cell[session.gateway]
            if not cell:
                del self.cells[player.cell]
        player.cell = -1

    # -- handlers --------------------------------------------------------------------------------

    def sector_move(self, session: PlayerSession, fields: Any, packet: bytes | None) -> bytes:
        account_no, x, y = fields
        if account_no != session.account_no:
            raise Violation("account_mismatch")
        if x >= SECTOR_MAX or y >= SECTOR_MAX:
            raise Violation("sector_out_of_range")
        player: Player = session.state
        self._leave_cell(session, player)
        player.cell = index = x * SECTOR_MAX + y
        cell = self.cells.get(index)
        if cell is None:
            cell = self.cells[index] = {}
        sids = cell.get(session.gateway)
        if sids is None:
            sids = cell[session.gateway] = {}
        sids[session.sid] = None
        assert self.host is not None
        if packet is not None:
            return self.host.codec.retype(packet, RES_MOVE)
        return self.host.codec.encode_fields(RES_MOVE, fields)

    def message(self, session: PlayerSession, fields: Any, packet: bytes | None) -> None:
        account_no, text = fields
        if account_no != session.account_no:
            raise Violation("account_mismatch")
        player: Player = session.state
        if self.rate:
            now = time.monotonic()
            tokens = min(self.rate, player.tokens + (now - player.refreshed) * self.rate)
            player.refreshed = now
            if tokens < 1:
                raise Violation("chat_flood")
            player.tokens = tokens - 1
        self.said += 1
        if player.cell < 0:
            self.unheard += 1
            return
        host = self.host
        assert host is not None
        reply = host.codec.encode_fields(
            RES_MESSAGE, (account_no, player.user_id, player.nickname, text)
        )
        self._fan_out(player.cell, reply)
        if host.peers:
            x, y = divmod(player.cell, SECTOR_MAX)
            host.cast([0, CAST, x, y, reply])
            self.cast_out += 1

    def heartbeat(self, session: PlayerSession, fields: Any, packet: bytes | None) -> None:
        pass  # the gateway's idle timer saw it

    def peer_item(self, source: bytes, mtype: int, fields: list[Any]) -> None:
        """A message said on another chat worker: to this worker's players around it."""
        x, y, reply = fields
        if not (0 <= x < SECTOR_MAX and 0 <= y < SECTOR_MAX):
            assert self.host is not None
            self.host.counters["bad_cast"] += 1
            return
        self.cast_in += 1
        self._fan_out(x * SECTOR_MAX + y, reply)

    def _fan_out(self, index: int, reply: bytes) -> None:
        """Write `reply` to every player of this worker in the 3 x 3 sectors around `index`:
        one DELIVER item per gateway."""
        cells = self.cells
        receivers: dict[bytes, list[int]] = {}
        for near in NEIGHBOURS[index]:
            cell = cells.get(near)
            if cell is None:
                continue
            for gateway, sids in cell.items():
                listed = receivers.get(gateway)
                if listed is None:
                    receivers[gateway] = list(sids)
                else:
                    listed.extend(sids)
        host = self.host
        assert host is not None
        for gateway, listed in receivers.items():
            count = len(listed)
            self.deliveries += count
            host.deliver(gateway, array("q", listed).tobytes(), count, reply)

    def collect(self) -> dict[str, Any]:
        assert self.host is not None
        counters = self.host.counters
        rates = self._rates.update({
            "message_tps": self.said, "delivery_tps": self.deliveries,
            "cast_in_tps": self.cast_in, "cast_out_tps": self.cast_out,
            "update_tps": counters["game_frames"],
        })  # fmt: skip
        occupancy = [sum(len(sids) for sids in cell.values()) for cell in self.cells.values()]
        return {
            "session_login": self.players,
            "sectors_occupied": len(occupancy),
            "sector_max": max(occupancy, default=0),
            "key_miss": counters["login_failed"],
            "message_total": self.said,
            "delivery_total": self.deliveries,
            "message_no_sector": self.unheard,
            **rates,
        }


    def totals(self) -> dict[str, int]:
        return {"message": self.said, "delivery": self.deliveries, "cast_in": self.cast_in,
                "cast_out": self.cast_out, "message_no_sector": self.unheard}  # fmt: skip


def create(config: Config) -> ChatApp:
    return ChatApp(config)
