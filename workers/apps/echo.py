"""The echo game (the original BattleServer's MMOServer_Echo) as an app of the worker runtime.

CS_GAME_REQ_LOGIN opens a session (version checked against ``[game] version`` before the key);
in GAME mode CS_GAME_REQ_ECHO is answered with CS_GAME_RES_ECHO (AccountNo must be the
session's) and CS_GAME_REQ_HEARTBEAT is counted. An echo of a relayed session is answered by
re-typing the request packet (same body, same R: :meth:`cluster.codec.Codec.retype`), which is
byte for byte what encoding the reply would give with that R.
"""

from __future__ import annotations

from typing import Any

from cluster.config import Config
from cluster.messages import (
    GAME_CLIENT_MESSAGES,
    GameLoginStatus,
    GameReqEcho,
    GameReqHeartbeat,
    GameReqLogin,
    GameResEcho,
    GameResLogin,
)
from workers.apps import App, Violation
from workers.host import PlayerSession

RES_LOGIN, RES_ECHO = GameResLogin.TYPE, GameResEcho.TYPE


class EchoApp(App):
    """Echo and heartbeat; the session's account is tracked in ``accountdb.status``."""

    name = "echo"
    tracks_status = True

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.version = config.game.version
        self.messages = GAME_CLIENT_MESSAGES
        self.login_type = GameReqLogin.TYPE
        self.handlers = {GameReqEcho.TYPE: self.echo, GameReqHeartbeat.TYPE: self.heartbeat}
        self.heartbeats = 0
        self.echoes = 0

    def login(self, session: PlayerSession, fields: list[Any]) -> tuple[int, bytes, str]:
        account_no, session_key, version = fields
        return account_no, session_key, "" if version == self.version else "version_miss"

    def login_reply(self, account_no: int, reason: str) -> list[Any]:
        if not reason:
            status = GameLoginStatus.OK
        elif reason == "version_miss":
            status = GameLoginStatus.VERSION_MISS
        else:
            status = GameLoginStatus.FAIL
        return [RES_LOGIN, int(status), account_no]

    def echo(self, session: PlayerSession, fields: Any, packet: bytes | None) -> bytes:
        if fields[0] != session.account_no:
            raise Violation("account_mismatch")
        self.echoes += 1
        assert self.host is not None
        if packet is not None:
            return self.host.codec.retype(packet, RES_ECHO)
        return self.host.codec.encode_fields(RES_ECHO, fields)

    def heartbeat(self, session: PlayerSession, fields: Any, packet: bytes | None) -> None:
        self.heartbeats += 1

    def totals(self) -> dict[str, int]:
        return {"echo": self.echoes, "heartbeat": self.heartbeats}


def create(config: Config) -> EchoApp:
    return EchoApp(config)
