"""Plain game-port and chat-port clients over asyncio streams, driven by the shared codec.

For tests and tools: connect, log in, echo (game) or move and say (chat), heartbeat, read
replies, and tell when the server closed the connection. They are not a hot path (the load
engines, :mod:`dummy.engine` and :mod:`dummy.chat_engine`, use protocols of their own).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Self

from cluster.codec import Codec
from cluster.messages import (
    CHAT_SERVER_MESSAGES,
    GAME_VERSION,
    SERVER_MESSAGES,
    SESSION_KEY_SIZE,
    ChatReqHeartbeat,
    ChatReqLogin,
    ChatReqMessage,
    ChatReqSectorMove,
    ChatResLogin,
    ChatResMessage,
    ChatResSectorMove,
    GameReqEcho,
    GameReqHeartbeat,
    GameReqLogin,
    GameResLogin,
    LoginReqLogin,
    LoginResLogin,
    Message,
)


class ServerClosed(ConnectionError):
    """The server closed the connection."""


async def login_once(
    host: str,
    port: int,
    account_no: int,
    session_key: bytes,
    codec: Codec | None = None,
    timeout: float = 10.0,
) -> LoginResLogin:
    """One login-port exchange: connect, CS_LOGIN_REQ_LOGIN, read CS_LOGIN_RES_LOGIN, and check
    that the server then closes the connection (AssertionError if it does not)."""
    codec = codec or Codec()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(codec.encode(LoginReqLogin(account_no, session_key)))
        decoder = codec.decoder(SERVER_MESSAGES)
        messages: list[Message] = []
        async with asyncio.timeout(timeout):
            while data := await reader.read(65536):
                messages.extend(decoder.feed(data))
        if len(messages) != 1 or not isinstance(messages[0], LoginResLogin):
            raise AssertionError(f"expected one LoginResLogin then close, got {messages!r}")
        return messages[0]
    finally:
        writer.close()


class PortClient:
    """One connection to a gateway port: send, receive decoded messages, see it closed. Its
    subclasses name the messages they accept from the server (``ACCEPTS``) and add the port's
    requests."""

    ACCEPTS: frozenset[int] = SERVER_MESSAGES

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, codec: Codec):
        self.reader = reader
        self.writer = writer
        self.codec = codec
        self.decoder = codec.decoder(self.ACCEPTS)
        self._received: deque[Message] = deque()
        self.account_no = 0

    @classmethod
    async def connect(cls, host: str, port: int, codec: Codec | None = None) -> Self:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, codec or Codec())

    def send(self, message: Any) -> None:
        """Queue one message (written with the next drain or at once by the transport)."""
        self.writer.write(self.codec.encode(message))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, timeout: float = 5.0) -> Message:
        """The next message from the server; ServerClosed at EOF, TimeoutError after `timeout`."""
        async with asyncio.timeout(timeout):
            while not self._received:
                data = await self.reader.read(65536)
                if not data:
                    raise ServerClosed("server closed the connection")
                self._received.extend(self.decoder.feed(data))
        return self._received.popleft()

    async def wait_closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (replies before that are discarded);
        False if it is still open after `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


class GameClient(PortClient):
    """One connection to a gateway's game port."""

    async def login(
        self,
        account_no: int,
        session_key: bytes = b"\0" * SESSION_KEY_SIZE,
        version: int = GAME_VERSION,
        timeout: float = 5.0,
    ) -> GameResLogin:
        """Send CS_GAME_REQ_LOGIN and return the server's CS_GAME_RES_LOGIN."""
        self.account_no = account_no
        self.send(GameReqLogin(account_no, session_key, version))
        await self.writer.drain()
        reply = await self.recv(timeout)
        if not isinstance(reply, GameResLogin):
            raise AssertionError(f"expected GameResLogin, got {reply!r}")
        return reply

    async def echo(self, count: int = 1, first_tick: int = 0, timeout: float = 10.0) -> list[Any]:
        """Send `count` pipelined echoes (SendTick first_tick, first_tick+1, ...) in one write and
        return the `count` replies in the order received."""
        self.writer.write(
            b"".join(
                self.codec.encode(GameReqEcho(self.account_no, first_tick + i))
                for i in range(count)
            )
        )
        await self.writer.drain()
        return [await self.recv(timeout) for _ in range(count)]

    def heartbeat(self) -> None:
        self.send(GameReqHeartbeat())


class ChatClient(PortClient):
    """One connection to a gateway's chat port (the original ChatServer's protocol)."""

    ACCEPTS = CHAT_SERVER_MESSAGES

    async def recv_type(self, kind: type[Any], timeout: float = 5.0) -> Any:
        """The next message of class `kind`; the ones before it are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.recv(timeout)
                if isinstance(message, kind):
                    return message

    async def login(
        self,
        account_no: int,
        user_id: str = "",
        nickname: str = "",
        session_key: bytes = b"\0" * SESSION_KEY_SIZE,
        timeout: float = 5.0,
    ) -> ChatResLogin:
        """Send CS_CHAT_REQ_LOGIN and return the server's CS_CHAT_RES_LOGIN."""
        self.account_no = account_no
        self.send(ChatReqLogin(account_no, user_id, nickname, session_key))
        await self.writer.drain()
        reply = await self.recv(timeout)
        if not isinstance(reply, ChatResLogin):
            raise AssertionError(f"expected ChatResLogin, got {reply!r}")
        return reply

    async def move(self, x: int, y: int, timeout: float = 5.0) -> ChatResSectorMove:
        """Send CS_CHAT_REQ_SECTOR_MOVE and return its CS_CHAT_RES_SECTOR_MOVE (messages that
        arrive before it are kept for :meth:`recv`)."""
        self.send(ChatReqSectorMove(self.account_no, x, y))
        await self.writer.drain()
        kept: list[Message] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await self.recv(timeout)
                    if isinstance(message, ChatResSectorMove):
                        return message
                    kept.append(message)
        finally:
            self._received.extendleft(reversed(kept))

    def say(self, text: str | bytes) -> bytes:
        """Send CS_CHAT_REQ_MESSAGE (`text` as UTF-16LE unless already bytes); returns the bytes
        sent, as the RES_MESSAGE of every receiver must carry them."""
        message = text.encode("utf-16-le") if isinstance(text, str) else text
        self.send(ChatReqMessage(self.account_no, message))
        return message

    async def messages(self, count: int, timeout: float = 5.0) -> list[ChatResMessage]:
        """The next `count` messages, which must all be CS_CHAT_RES_MESSAGE."""
        await self.writer.drain()
        got = [await self.recv(timeout) for _ in range(count)]
        for message in got:
            if not isinstance(message, ChatResMessage):
                raise AssertionError(f"expected ChatResMessage, got {message!r}")
        return got

    async def quiet(self, timeout: float = 0.5) -> list[Message]:
        """Whatever arrives within `timeout` (for "nothing arrives" checks)."""
        got: list[Message] = []
        try:
            while True:
                got.append(await self.recv(timeout))
        except TimeoutError:
            pass
        return got

    def heartbeat(self) -> None:
        self.send(ChatReqHeartbeat())
