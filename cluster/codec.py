"""The client wire protocol's framing (docs/protocol.md), sans-I/O.

Bytes in, typed messages out (:class:`StreamDecoder`); messages in, bytes out (:class:`Codec`).
No sockets, no clocks: the gateway, the dummy and the tests drive the same objects.

Every packet is ``code:u8 len:u16 R^K:u8 cs^R^K:u8`` followed by ``len`` payload bytes, each
``plain ^ R ^ K``. Because the header carries ``R ^ K``, the XOR mask for the payload and the
checksum is that header byte itself; the mask is applied with ``bytes.translate`` over a
precomputed table, and the checksum is ``sum()`` over the plain payload, so no Python code loops
over bytes.

Errors are split by whose fault they are (as h11 does): :class:`RemoteProtocolError` means the
peer sent something that breaks the protocol (its ``reason`` is a stable counter name);
:class:`LocalProtocolError` means our own code tried to send something that cannot be encoded.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable
from typing import Any

from cluster.messages import SPECS, Message, MessageSpec

HEADER = struct.Struct("<BHBB")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 5000
MAX_PACKET = HEADER_SIZE + MAX_PAYLOAD

_pack_header = HEADER.pack
#: ``_XOR[m]`` maps every byte b to ``b ^ m``; used with ``bytes.translate``.
_XOR = [bytes(b ^ mask for b in range(256)) for mask in range(256)]


class ProtocolError(Exception):
    """Base of the codec's errors."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the wire protocol. ``reason`` is one of :data:`VIOLATIONS`; the
    connection must be dropped (and the event counted under that reason)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class LocalProtocolError(ProtocolError):
    """We tried to encode something the protocol cannot carry (a bug or bad data on our side)."""


#: Stable names of every framing violation, used as counter labels.
VIOLATIONS = (
    "bad_code",  # header code differs from the configured packet code
    "too_long",  # len > MAX_PAYLOAD
    "bad_checksum",  # checksum of the decoded payload does not match
    "too_short",  # payload shorter than the 2-byte message type
    "unknown_type",  # type not known, or not one this side accepts
    "wrong_size",  # payload size differs from the type's (a tail's: fixed part + its count)
    "tail_too_long",  # a variable-length field longer than its type allows (a chat message)
)


def _check_size(spec: MessageSpec, plain: bytes) -> None:
    """Raise the violation of a payload whose size is not its type's: a fixed type must match
    exactly; a type with a tail must be its fixed part plus the count its last body item gives
    (no short read, no trailing bytes), and that count at most the tail's bound."""
    length = len(plain)
    if not spec.tail or length < spec.size:
        raise RemoteProtocolError(
            "wrong_size", f"{spec.name} of {length} bytes, expected {spec.size}"
        )
    count = plain[spec.size - 2] | plain[spec.size - 1] << 8
    if count > spec.tail:
        raise RemoteProtocolError(
            "tail_too_long", f"{spec.name} carries {count} bytes, at most {spec.tail}"
        )
    if length != spec.size + count:
        raise RemoteProtocolError(
            "wrong_size", f"{spec.name} of {length} bytes, expected {spec.size} + {count}"
        )


class Codec:
    """Encodes messages for one deployment's packet code and keys (docs/protocol.md defaults:
    code 119, key1 50, key2 132). Stateless apart from its settings; share it freely."""

    def __init__(self, code: int = 119, key1: int = 50, key2: int = 132) -> None:
        for name, value in (("code", code), ("key1", key1), ("key2", key2)):
            if not 0 <= value <= 255:
                raise ValueError(f"{name} must be 0..255, got {value}")
        self.code = code
        self.key = key1 ^ key2
        self._rand = random.Random()
        self._getrandbits = self._rand.getrandbits

    def encode(self, message: Message, rand: int | None = None) -> bytes:
        """One packet for a message record. `rand` fixes R (0..255) for tests."""
        return self.encode_fields(message.TYPE, message, rand)

    def encode_fields(self, mtype: int, fields: Iterable[Any], rand: int | None = None) -> bytes:
        """One packet for message type `mtype` with `fields` in wire order (no record needed:
        this is the hot path of the gateway's reply side)."""
        spec = SPECS.get(mtype)
        if spec is None:
            raise LocalProtocolError(f"no such message type {mtype}")
        try:
            plain = spec.whole.pack(mtype, *fields) if spec.simple else spec.pack(fields)
        except (struct.error, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise LocalProtocolError(f"cannot encode {spec.name}{tuple(fields)!r}: {exc}") from None
        if rand is not None or len(plain) > MAX_PAYLOAD:
            return self.frame(plain, rand)
        mask = self._getrandbits(8) ^ self.key  # frame(), inlined: this is the reply hot path
        return _pack_header(self.code, len(plain), mask, (sum(plain) & 0xFF) ^ mask) + (
            plain.translate(_XOR[mask])
        )

    def frame(self, plain: bytes, rand: int | None = None) -> bytes:
        """Header + masked payload for an already packed plain payload."""
        if len(plain) > MAX_PAYLOAD:
            raise LocalProtocolError(f"payload of {len(plain)} bytes exceeds {MAX_PAYLOAD}")
        if rand is None:
            rand = self._rand.getrandbits(8)
        elif not 0 <= rand <= 255:
            raise LocalProtocolError(f"rand must be 0..255, got {rand}")
        mask = rand ^ self.key
        checksum = (sum(plain) & 0xFF) ^ mask
        return HEADER.pack(self.code, len(plain), mask, checksum) + plain.translate(_XOR[mask])

    def retype(self, packet: bytes, mtype: int) -> bytes:
        """A packet of type `mtype` whose body is `packet`'s, masked with the same R.

        `packet` must be one whole packet this codec's decoder accepted (so its checksum holds)
        and `mtype`'s layout must have the same body as its type's. An answer that repeats a
        request's fields (an echo) is then made without unmasking or re-encoding the body: only
        the two type bytes and the checksum change. R is any byte by the protocol; reusing the
        request's is as valid as drawing a new one."""
        mask = packet[3]
        lo, hi = mtype & 0xFF, mtype >> 8
        checksum = (packet[4] ^ mask) - (packet[5] ^ mask) - (packet[6] ^ mask) + lo + hi
        return (
            bytes((packet[0], packet[1], packet[2], mask, (checksum & 0xFF) ^ mask,
                   lo ^ mask, hi ^ mask))
            + packet[7:]
        )  # fmt: skip

    def decoder(
        self, accept: Iterable[int], records: bool = True, packets: bool = False
    ) -> StreamDecoder:
        """A fresh stream decoder that admits only the message types in `accept`; with
        ``records=False`` it yields ``(type, fields)`` tuples instead of message records (what
        a relay needs, cheaper), and with ``packets=True`` as well ``(type, fields, packet)``
        triples, `packet` being the whole packet as received (for :meth:`retype`)."""
        return StreamDecoder(self.code, accept, records, packets)


class StreamDecoder:
    """Turns a byte stream of one connection into message records.

    Feed it whatever each read returned; it returns the complete messages, in order (at most
    `limit` of them: the rest stay buffered, undecoded, for the next call, which may feed no new
    data), and keeps at most one partial packet (< MAX_PACKET bytes) beyond them. The first
    violation raises :class:`RemoteProtocolError`, and every later call raises it again: the
    stream is unusable after it (the connection is to be dropped). Messages that preceded the
    violation in the same call are not returned."""

    __slots__ = ("_accept", "_buffer", "_code", "_error", "_packets", "_pos", "_records")

    def __init__(
        self, code: int, accept: Iterable[int], records: bool = True, packets: bool = False
    ) -> None:
        self._code = code
        self._records = records
        self._packets = packets  # (type, fields, packet) triples (implies records=False)
        self._accept = {mtype: SPECS[mtype] for mtype in accept}
        self._buffer = b""
        self._pos = 0  # where the undecoded part of _buffer starts
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet decoded (a partial packet, or packets past a limit)."""
        return len(self._buffer) - self._pos

    def has_packet(self) -> bool:
        """Whether a whole packet is buffered (what the next ``feed(limit=...)`` would decode)."""
        data, pos = self._buffer, self._pos
        if len(data) - pos < HEADER_SIZE:
            return False
        return pos + HEADER_SIZE + (data[pos + 1] | data[pos + 2] << 8) <= len(data)

    def _joined(self, data: bytes) -> tuple[bytes, int]:
        """What is buffered followed by `data`, and where its undecoded part starts; raises the
        stream's violation again if it had one."""
        if self._error is not None:
            raise self._error
        if not self._buffer:
            return data, 0
        if data:
            return self._buffer[self._pos :] + data, 0
        return self._buffer, self._pos

    def split(self, data: bytes = b"", limit: int = 1 << 30) -> tuple[bytes, int]:
        """Like :meth:`feed`, but without decoding: the bytes of the next whole packets (at most
        `limit` of them), exactly as received, and their count. Only the framing is checked
        here (packet code, length); the payloads (mask, checksum, type, size) are for whoever
        decodes the returned bytes with a decoder of their own (a relay's far end). Shares the
        buffer with :meth:`feed`, so a stream may switch from one to the other between calls.
        Raises RemoteProtocolError on a framing violation (and again on every later call)."""
        data, pos = self._joined(data)
        start, end, count, code = pos, len(data), 0, self._code
        while end - pos >= HEADER_SIZE and count < limit:
            length = data[pos + 1] | data[pos + 2] << 8
            if data[pos] != code or length > MAX_PAYLOAD:
                if data[pos] != code:
                    detail = f"packet code {data[pos]}, expected {code}"
                    error = RemoteProtocolError("bad_code", detail)
                else:
                    error = RemoteProtocolError("too_long", f"length {length} > {MAX_PAYLOAD}")
                self._error = error
                self._buffer, self._pos = b"", 0
                raise error
            stop = pos + HEADER_SIZE + length
            if stop > end:
                break
            pos = stop
            count += 1
        if pos >= end:
            self._buffer, self._pos = b"", 0
        else:
            self._buffer, self._pos = data, pos
        if not count:
            return b"", 0
        return (data if start == 0 and pos == end else data[start:pos]), count

    def feed(self, data: bytes = b"", limit: int | None = None) -> list[Message]:
        """Decode `data` (any chunk of the stream, or nothing to go on with what is buffered), at
        most `limit` messages. Raises RemoteProtocolError on a violation."""
        data, pos = self._joined(data)
        messages: list[Message] = []
        end = len(data)
        budget = end if limit is None else limit
        unpack_header = HEADER.unpack_from
        accept = self._accept
        records = self._records
        try:
            while end - pos >= HEADER_SIZE and budget > 0:
                code, length, mask, checksum = unpack_header(data, pos)
                if code != self._code:
                    raise RemoteProtocolError(
                        "bad_code", f"packet code {code}, expected {self._code}"
                    )
                if length > MAX_PAYLOAD:
                    raise RemoteProtocolError("too_long", f"length {length} > {MAX_PAYLOAD}")
                stop = pos + HEADER_SIZE + length
                if stop > end:
                    break
                plain = data[pos + HEADER_SIZE : stop].translate(_XOR[mask])
                if sum(plain) & 0xFF != checksum ^ mask:
                    raise RemoteProtocolError("bad_checksum", f"checksum mismatch ({length} bytes)")
                if length < 2:
                    raise RemoteProtocolError("too_short", f"payload of {length} bytes has no type")
                mtype = plain[0] | plain[1] << 8
                spec = accept.get(mtype)
                if spec is None:
                    raise RemoteProtocolError("unknown_type", f"message type {mtype} not accepted")
                if length != spec.size or spec.tail:
                    _check_size(spec, plain)
                if self._packets:
                    fields = (
                        spec.body.unpack_from(plain, 2) if spec.simple
                        else spec.unpack_fields(plain)
                    )  # fmt: skip
                    messages.append((mtype, fields, data[pos:stop]))
                elif records:
                    messages.append(spec.unpack(plain))
                elif not spec.simple:
                    messages.append((mtype, spec.unpack_fields(plain)))
                else:
                    messages.append((mtype, spec.body.unpack_from(plain, 2)))
                budget -= 1
                pos = stop
        except RemoteProtocolError as exc:
            self._error = exc
            self._buffer, self._pos = b"", 0
            raise
        if pos >= end:
            self._buffer, self._pos = b"", 0
        else:
            self._buffer, self._pos = data, pos
        return messages
