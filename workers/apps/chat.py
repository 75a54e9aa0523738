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

**Fan-out, once per frame.** Players are placed on chat workers by account, not by sector, so
the players around a sector may be on every worker. A message is encoded once, on the sender's
worker, and kept with the sector it was said in until the end of the frame (or until a player of
this worker moves: the messages before a move are matched against the sectors before it). Then,
for every sector with players of this worker near a sector with messages, the messages around it
go out once per gateway as one DELIVER item (the packets and the session ids: each receiver gets
them in one write), and what was said here goes once to every other chat worker (one CAST item:
the sectors and their packets), which fans it out to its own players the same way. So each
receiver gets a message exactly once (it is on exactly one worker), and in the sender's order
(one worker handles all of a sender's packets in order, a sender's messages between two fan-outs
are all in one sector, fan-outs go out in order, and a worker fans out what one peer cast before
it takes that peer's next cast). docs/architecture.md ("Chat") says why this design and what it
costs.
"""

from __future__ import annotations

import struct
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


class Mail:
    """Messages waiting for the end of the frame, by sector cell: their packets, in order, and
    how many packets that is."""

    __slots__ = ("cells", "counts", "sources")

    def __init__(self) -> None:
        self.cells: dict[int, list[bytes]] = {}
        self.counts: dict[int, int] = {}
        self.sources: set[bytes] = set()  # peers whose casts are in it

    def add(self, cell: int, packets: bytes, count: int = 1) -> None:
        waiting = self.cells.get(cell)
        if waiting is None:
            self.cells[cell] = [packets]
            self.counts[cell] = count
        else:
            waiting.append(packets)
            self.counts[cell] += count


class ChatApp(App):
    """The sector map of this worker's players, and the message fan-out."""

    name = "chat"
    peer_types = frozenset({CAST})

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
        self.said_here = Mail()  # this frame's messages of this worker's players
        self.heard = Mail()  # messages cast by the other chat workers, not fanned out yet
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
        self.fan_out()  # what was said before the move is heard where the player was
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
        assert self.host is not None
        self.said_here.add(player.cell, self.host.codec.encode_fields(
            RES_MESSAGE, (account_no, player.user_id, player.nickname, text)
        ))  # fmt: skip

    def heartbeat(self, session: PlayerSession, fields: Any, packet: bytes | None) -> None:
        pass  # the gateway's idle timer saw it

    def peer_item(self, source: bytes, mtype: int, fields: list[Any]) -> None:
        """Messages said on another chat worker: fanned out to this worker's players around
        them with the next frame (at once when that peer's previous cast still waits, so that
        its senders' order holds)."""
        host = self.host
        assert host is not None
        cells, packets = fields
        try:
            triples = struct.unpack(f"<{len(cells) // 4}i", cells) if len(cells) % 12 == 0 else ()
        except struct.error:
            triples = ()
        if (
            not triples
            or sum(triples[2::3]) != len(packets)
            or not all(
                0 <= cell < SECTOR_MAX * SECTOR_MAX and count > 0
                for cell, count in zip(triples[0::3], triples[1::3], strict=True)
            )
        ):
            host.counters["bad_cast"] += 1
            return
        if source in self.heard.sources:
            self.fan_out()
        self.heard.sources.add(source)
        offset = 0
        for cell, count, length in zip(triples[0::3], triples[1::3], triples[2::3], strict=True):
            self.heard.add(cell, packets[offset : offset + length], count)
            offset += length
            self.cast_in += count
        host.wake()

    def end_frame(self) -> None:
        self.fan_out()

    def fan_out(self) -> None:
        """Deliver what was said (here, or on other workers) since the last fan-out to this
        worker's players around it, and cast what was said here to the other workers."""
        said, heard = self.said_here, self.heard
        if not said.cells and not heard.cells:
            return
        host = self.host
        assert host is not None
        self.said_here, self.heard = Mail(), Mail()
        blobs: dict[int, tuple[bytes, int]] = {}
        if said.cells:
            layout: list[int] = []
            for cell, packets in said.cells.items():
                blob = b"".join(packets)
                blobs[cell] = (blob, len(packets))
                layout += (cell, len(packets), len(blob))
            if host.peers:
                host.cast([0, CAST, struct.pack(f"<{len(layout)}i", *layout),
                           b"".join(blob for blob, _ in blobs.values())])  # fmt: skip
                self.cast_out += sum(layout[1::3])
        for cell, packets in heard.cells.items():
            mine = blobs.get(cell)
            count = heard.counts[cell]
            if mine is None:
                blobs[cell] = (b"".join(packets), count)
            else:
                blobs[cell] = (mine[0] + b"".join(packets), mine[1] + count)
        cells = self.cells
        targets: dict[int, None] = {}
        for cell in blobs:
            for near in NEIGHBOURS[cell]:
                if near in cells:
                    targets[near] = None
        for target in targets:
            parts: list[bytes] = []
            count = 0
            for near in NEIGHBOURS[target]:
                got = blobs.get(near)
                if got is not None:
                    parts.append(got[0])
                    count += got[1]
            blob = parts[0] if len(parts) == 1 else b"".join(parts)
            for gateway, sids in cells[target].items():
                receivers = len(sids)
                self.deliveries += receivers * count
                host.deliver(gateway, array("q", sids).tobytes(), receivers, blob, count)

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
