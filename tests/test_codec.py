"""Unit tests of the sans-I/O client codec (cluster/codec.py, cluster/messages.py).

Well-formed packets come from ``Codec``; malformed ones are built by :func:`raw_packet`, which
follows docs/protocol.md's XOR rule independently of the codec (only ``codec.HEADER`` is shared).
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import codec
from cluster.codec import (
    HEADER,
    MAX_PACKET,
    MAX_PAYLOAD,
    VIOLATIONS,
    Codec,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    StreamDecoder,
)
from cluster.messages import (
    BUILTIN_TYPES,
    CHAT_CLIENT_MESSAGES,
    CHAT_MESSAGE_MAX,
    CHAT_SERVER_MESSAGES,
    GAME_CLIENT_MESSAGES,
    LOGIN_CLIENT_MESSAGES,
    SERVER_MESSAGES,
    SPECS,
    ChatReqHeartbeat,
    ChatReqLogin,
    ChatReqMessage,
    ChatReqSectorMove,
    ChatResLogin,
    ChatResMessage,
    ChatResSectorMove,
    GameLoginStatus,
    GameReqEcho,
    GameReqHeartbeat,
    GameReqLogin,
    GameResEcho,
    GameResLogin,
    LoginReqLogin,
    LoginResLogin,
    LoginStatus,
)

DEFAULT_K = 50 ^ 132  # 0xB6
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
ALL_TYPES = BUILTIN_TYPES  # apps' registered types (tests/test_apps.py) are not the protocol's

KOREAN_20 = "가나다라마바사아자차카타파하거너더러머버"  # 20 UTF-16 units, the field maximum
EMOJI_10 = "😀" * 10  # 10 surrogate pairs = 20 UTF-16 units


def raw_packet(
    plain: bytes,
    *,
    code: int = 119,
    key: int = DEFAULT_K,
    rand: int = 0x5A,
    length: int | None = None,
    checksum: int | None = None,
) -> bytes:
    """A packet per docs/protocol.md: header ``code len R^K cs^R^K``, payload ``plain ^ R ^ K``.
    `length` and `checksum` (the plain checksum, before masking) may be forced to lie."""
    mask = rand ^ key
    plain_cs = sum(plain) % 256 if checksum is None else checksum
    size = len(plain) if length is None else length
    return HEADER.pack(code, size, mask, plain_cs ^ mask) + bytes(b ^ mask for b in plain)


def chat_plain(message: bytes, account_no: int = 7, count: int | None = None) -> bytes:
    """A CS_CHAT_REQ_MESSAGE payload whose MessageLen may lie (`count`)."""
    size = len(message) if count is None else count
    return struct.pack("<HqH", ChatReqMessage.TYPE, account_no, size) + message


def type_bytes(mtype: int) -> bytes:
    return struct.pack("<H", mtype)


def echo_plain(account_no: int = 7, send_tick: int = 123456) -> bytes:
    return struct.pack("<Hqq", GameReqEcho.TYPE, account_no, send_tick)


def feed_all(decoder: StreamDecoder, chunks: list[bytes]) -> list[object]:
    out: list[object] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
        assert decoder.buffered <= MAX_PACKET - 1
    return out


# One representative instance of every message type, with the extremes of each field.
REPRESENTATIVES = [
    LoginReqLogin(account_no=INT64_MIN, session_key=bytes(range(64))),  # starts with NUL
    LoginResLogin(
        account_no=INT64_MAX,
        status=LoginStatus.OK,
        user_id=KOREAN_20,
        nickname=EMOJI_10,
        game_server_ip="255.255.255.255",
        game_server_port=65535,
        chat_server_ip="ABCDEFGHIJKLMNOP",  # 16 chars, the field maximum
        chat_server_port=0,
    ),
    GameReqLogin(account_no=-1, session_key=b"key" + b"\x00" * 60 + b"\xff", version=-(2**31)),
    GameResLogin(status=GameLoginStatus.VERSION_MISS, account_no=INT64_MIN),
    GameReqEcho(account_no=INT64_MAX, send_tick=INT64_MIN),
    GameResEcho(account_no=INT64_MIN, send_tick=INT64_MAX),
    GameReqHeartbeat(),
    ChatReqLogin(
        account_no=INT64_MAX, user_id=KOREAN_20, nickname=EMOJI_10, session_key=bytes(range(64))
    ),
    ChatResLogin(status=1, account_no=INT64_MIN),
    ChatReqSectorMove(account_no=-1, sector_x=0, sector_y=65535),
    ChatResSectorMove(account_no=1, sector_x=65535, sector_y=0),
    ChatReqMessage(account_no=INT64_MIN, message="안녕".encode("utf-16-le") * 128),  # 512 bytes
    ChatResMessage(account_no=INT64_MAX, user_id="", nickname=KOREAN_20, message=b""),
    ChatReqHeartbeat(),
]

CODEC_SETTINGS = [(119, 50, 132), (7, 0, 0), (255, 255, 1), (0, 13, 13)]


def test_representatives_cover_every_spec() -> None:
    assert {m.TYPE for m in REPRESENTATIVES} == set(BUILTIN_TYPES)


def test_accept_sets_partition_the_specs() -> None:
    sets = [GAME_CLIENT_MESSAGES, LOGIN_CLIENT_MESSAGES, SERVER_MESSAGES, CHAT_CLIENT_MESSAGES,
            CHAT_SERVER_MESSAGES]  # fmt: skip
    assert frozenset().union(*sets) == ALL_TYPES
    assert sum(len(s) for s in sets) == len(ALL_TYPES)  # no type in two sets


# ---------------------------------------------------------------- the docs/protocol.md test vector


def test_frame_matches_protocol_test_vector() -> None:
    assert Codec().frame(bytes([0xE8, 0x03]), rand=0x11) == bytes.fromhex("770200a74c4fa4")


def test_protocol_test_vector_header_fields() -> None:
    packet = Codec().frame(bytes([0xE8, 0x03]), rand=0x11)
    code, length, sent_r, sent_cs = HEADER.unpack_from(packet)
    assert code == 119
    assert length == 2
    assert sent_r == 0x11 ^ 0xB6 == 0xA7
    assert (0xE8 + 0x03) % 256 == 0xEB
    assert sent_cs == 0xEB ^ 0x11 ^ 0xB6 == 0x4C
    assert packet[5:] == bytes([0xE8 ^ 0xA7, 0x03 ^ 0xA7]) == bytes.fromhex("4fa4")


def test_protocol_test_vector_passes_the_checksum_and_fails_only_on_type() -> None:
    # Type 1000 is not a message, so the best a decoder can do is get past the checksum.
    decoder = Codec().decoder(ALL_TYPES)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(bytes.fromhex("770200a74c4fa4"))
    assert info.value.reason == "unknown_type"


def test_vector_rule_with_a_real_message_type() -> None:
    # Same construction as the vector, with type 5002 (REQ_HEARTBEAT, plain "8a 13"):
    # cs = 0x9d, sent as 0x9d ^ 0xa7 = 0x3a; payload 8a^a7 = 2d, 13^a7 = b4.
    expected = bytes.fromhex("770200a73a2db4")
    plain = type_bytes(GameReqHeartbeat.TYPE)
    assert plain == bytes([0x8A, 0x13])
    assert Codec().frame(plain, rand=0x11) == expected
    assert raw_packet(plain, rand=0x11) == expected
    assert Codec().encode(GameReqHeartbeat(), rand=0x11) == expected
    assert Codec().decoder(GAME_CLIENT_MESSAGES).feed(expected) == [GameReqHeartbeat()]


def test_frame_header_carries_code_len_mask_and_masked_checksum() -> None:
    plain = echo_plain()
    packet = Codec(code=42, key1=1, key2=2).frame(plain, rand=0x80)
    code, length, sent_r, sent_cs = HEADER.unpack_from(packet)
    mask = 0x80 ^ 1 ^ 2
    assert (code, length, sent_r) == (42, len(plain), mask)
    assert sent_cs == (sum(plain) % 256) ^ mask
    assert bytes(b ^ mask for b in packet[5:]) == plain


def test_frame_uses_random_r_when_not_given() -> None:
    c = Codec()
    masks = {HEADER.unpack_from(c.frame(b"\x00\x00"))[2] for _ in range(200)}
    assert len(masks) > 1


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("settings_", CODEC_SETTINGS, ids=lambda s: f"code{s[0]}-k{s[1]}-{s[2]}")
@pytest.mark.parametrize("rand", [0, 0xB6, 255])
@pytest.mark.parametrize("message", REPRESENTATIVES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(
    message: object, rand: int, settings_: tuple[int, int, int]
) -> None:
    c = Codec(*settings_)
    packet = c.encode(message, rand=rand)
    spec = SPECS[message.TYPE]  # type: ignore[attr-defined]
    tail = len(message[-1]) if spec.tail else 0  # type: ignore[index]
    assert len(packet) == 5 + spec.size + tail
    assert packet == raw_packet(
        SPECS[message.TYPE].pack(tuple(message)),  # type: ignore[attr-defined]
        code=settings_[0],
        key=settings_[1] ^ settings_[2],
        rand=rand,
    )
    decoded = c.decoder(ALL_TYPES).feed(packet)
    assert decoded == [message]
    assert type(decoded[0]) is type(message)


def test_a_relay_decoder_yields_type_and_fields_in_wire_order() -> None:
    c = Codec()
    stream = b"".join(c.encode(m) for m in REPRESENTATIVES)
    decoded = c.decoder(ALL_TYPES, records=False).feed(stream)
    assert decoded == [(m.TYPE, tuple(m)) for m in REPRESENTATIVES]  # type: ignore[attr-defined]
    assert all(type(fields) is tuple for _, fields in decoded)


def test_a_limited_feed_leaves_the_rest_undecoded_for_the_next_call() -> None:
    c = Codec()
    echoes = [GameReqEcho(7, tick) for tick in range(10)]
    decoder = c.decoder(ALL_TYPES)
    assert decoder.feed(b"".join(c.encode(m) for m in echoes), limit=4) == echoes[:4]
    assert decoder.has_packet()
    assert decoder.feed(limit=0) == []
    assert decoder.feed(limit=100) == echoes[4:]
    assert not decoder.has_packet() and decoder.buffered == 0


@pytest.mark.parametrize("message", REPRESENTATIVES, ids=lambda m: type(m).__name__)
def test_encode_fields_equals_encode(message: object) -> None:
    c = Codec()
    assert c.encode_fields(message.TYPE, tuple(message), rand=9) == c.encode(  # type: ignore[attr-defined]
        message, rand=9
    )


@pytest.mark.parametrize(
    ("accept", "messages"),
    [
        (GAME_CLIENT_MESSAGES, [m for m in REPRESENTATIVES if m.TYPE in GAME_CLIENT_MESSAGES]),
        (LOGIN_CLIENT_MESSAGES, [m for m in REPRESENTATIVES if m.TYPE in LOGIN_CLIENT_MESSAGES]),
        (SERVER_MESSAGES, [m for m in REPRESENTATIVES if m.TYPE in SERVER_MESSAGES]),
    ],
    ids=["game-client", "login-client", "server"],
)
def test_each_side_decodes_its_own_messages(accept: frozenset[int], messages: list[object]) -> None:
    c = Codec()
    stream = b"".join(c.encode(m) for m in messages)
    assert c.decoder(accept).feed(stream) == messages


def test_session_key_keeps_all_64_bytes_including_nuls() -> None:
    key = b"\x00" * 10 + b"abc" + b"\x00" * 51
    c = Codec()
    (decoded,) = c.decoder(LOGIN_CLIENT_MESSAGES).feed(c.encode(LoginReqLogin(5, key)))
    assert decoded.session_key == key
    assert len(decoded.session_key) == 64


def test_wchar_fields_are_utf16le_nul_padded_on_the_wire() -> None:
    message = LoginResLogin(1, LoginStatus.OK, "가", "", "1.2.3.4", 1, "", 2)
    plain = SPECS[LoginResLogin.TYPE].pack(tuple(message))
    user_id = plain[2 + 8 + 1 : 2 + 8 + 1 + 40]
    assert user_id == "가".encode("utf-16-le") + b"\x00" * 38
    assert len(plain) == 159


def test_empty_and_short_text_round_trips() -> None:
    message = LoginResLogin(0, LoginStatus.FAIL, "", "a", "", 0, "x", 0)
    c = Codec()
    assert c.decoder(SERVER_MESSAGES).feed(c.encode(message)) == [message]


def test_invalid_utf16_from_peer_decodes_with_replacement() -> None:
    # A lone high surrogate in user_id: the decoder must not blow up on the peer's text.
    body = struct.pack("<qB40s40s32sH32sH", 1, 1, b"\x00\xd8A\x00", b"", b"", 1, b"", 1)
    packet = raw_packet(type_bytes(LoginResLogin.TYPE) + body)
    (decoded,) = Codec().decoder(SERVER_MESSAGES).feed(packet)
    assert decoded.user_id == "\ufffdA"


# ------------------------------------------------------------------------------- streaming


def _mixed_stream(c: Codec) -> tuple[list[object], bytes]:
    messages: list[object] = []
    for i in range(12):
        messages.append(GameReqEcho(account_no=i - 6, send_tick=INT64_MAX - i))
        if i % 3 == 0:
            messages.append(GameReqHeartbeat())
        if i % 5 == 0:
            messages.append(GameReqLogin(i, bytes([i]) * 64, 1))
    stream = b"".join(c.encode(m, rand=(37 * n) % 256) for n, m in enumerate(messages))
    return messages, stream


def test_stream_split_at_every_offset_yields_the_same_messages() -> None:
    c = Codec()
    messages, stream = _mixed_stream(c)
    for cut in range(len(stream) + 1):
        decoder = c.decoder(GAME_CLIENT_MESSAGES)
        assert feed_all(decoder, [stream[:cut], stream[cut:]]) == messages, cut
        assert decoder.buffered == 0


def test_stream_fed_one_byte_at_a_time_yields_the_same_messages() -> None:
    c = Codec()
    messages, stream = _mixed_stream(c)
    decoder = c.decoder(GAME_CLIENT_MESSAGES)
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert feed_all(decoder, chunks) == messages
    assert decoder.buffered == 0


def test_many_packets_in_one_chunk_yield_all_messages_in_order() -> None:
    c = Codec()
    messages = [GameReqEcho(n, -n) for n in range(500)]
    stream = b"".join(c.encode(m) for m in messages)
    assert c.decoder(GAME_CLIENT_MESSAGES).feed(stream) == messages


def test_partial_packet_is_buffered_and_empty_feed_is_harmless() -> None:
    c = Codec()
    packet = c.encode(GameReqEcho(1, 2))
    decoder = c.decoder(GAME_CLIENT_MESSAGES)
    assert decoder.feed(b"") == []
    assert decoder.feed(packet[:3]) == []
    assert decoder.buffered == 3
    assert decoder.feed(packet[3:-1]) == []
    assert decoder.buffered == len(packet) - 1
    assert decoder.feed(b"") == []
    assert decoder.feed(packet[-1:]) == [GameReqEcho(1, 2)]
    assert decoder.buffered == 0


def test_max_length_packet_is_buffered_whole_then_judged() -> None:
    plain = echo_plain() + bytes(MAX_PAYLOAD - 18)
    packet = raw_packet(plain)
    assert len(packet) == MAX_PACKET
    decoder = Codec().decoder(GAME_CLIENT_MESSAGES)
    assert decoder.feed(packet[:-1]) == []
    assert decoder.buffered == MAX_PACKET - 1
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(packet[-1:])
    assert info.value.reason == "wrong_size"


def test_decoder_from_codec_with_other_keys_still_decodes() -> None:
    # The header carries R ^ K, so decoding never needs K (docs/protocol.md's rule cancels it).
    packet = Codec(key1=1, key2=2).encode(GameReqEcho(3, 4))
    assert Codec().decoder(GAME_CLIENT_MESSAGES).feed(packet) == [GameReqEcho(3, 4)]


int64 = st.integers(INT64_MIN, INT64_MAX)


@settings(max_examples=200, deadline=None)
@given(
    fields=st.lists(st.tuples(int64, int64, st.integers(0, 255)), min_size=1, max_size=25),
    code=st.integers(0, 255),
    key1=st.integers(0, 255),
    key2=st.integers(0, 255),
    data=st.data(),
)
def test_property_echoes_survive_random_splits(
    fields: list[tuple[int, int, int]], code: int, key1: int, key2: int, data: st.DataObject
) -> None:
    c = Codec(code, key1, key2)
    messages = [GameReqEcho(a, t) for a, t, _ in fields]
    stream = b"".join(c.encode(m, rand=r) for m, (_, _, r) in zip(messages, fields, strict=True))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts"))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    decoder = c.decoder(GAME_CLIENT_MESSAGES)
    assert feed_all(decoder, chunks) == messages
    assert decoder.buffered == 0


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=20))
def test_property_garbage_only_raises_remote_protocol_errors(chunks: list[bytes]) -> None:
    decoder = Codec().decoder(ALL_TYPES)
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            assert decoder.buffered <= MAX_PACKET - 1
    except RemoteProtocolError as exc:
        assert exc.reason in VIOLATIONS


# ----------------------------------------------------------------------- remote violations

GOOD_ECHO = raw_packet(echo_plain())


def _flip_last_byte(packet: bytes) -> bytes:
    return packet[:-1] + bytes([packet[-1] ^ 0x01])


VIOLATION_CASES = [
    ("bad_code", "code-120", raw_packet(echo_plain(), code=120)),
    ("bad_code", "code-0", raw_packet(echo_plain(), code=0)),
    ("too_long", "len-5001", raw_packet(b"", length=MAX_PAYLOAD + 1)),
    ("too_long", "len-65535", raw_packet(b"", length=0xFFFF)),
    ("bad_checksum", "flipped-payload-byte", _flip_last_byte(GOOD_ECHO)),
    (
        "bad_checksum",
        "wrong-header-checksum",
        raw_packet(echo_plain(), checksum=(sum(echo_plain()) + 1) % 256),
    ),
    ("too_short", "len-0", raw_packet(b"")),
    ("too_short", "len-1", raw_packet(b"\x88")),
    ("unknown_type", "server-message", raw_packet(struct.pack("<Hqq", GameResEcho.TYPE, 1, 2))),
    ("unknown_type", "type-9999", raw_packet(type_bytes(9999) + bytes(16))),
    ("unknown_type", "login-message", raw_packet(type_bytes(LoginReqLogin.TYPE) + bytes(72))),
    ("wrong_size", "one-extra-byte", raw_packet(echo_plain() + b"\x00")),
    ("wrong_size", "one-missing-byte", raw_packet(echo_plain()[:-1])),
    ("wrong_size", "heartbeat-extra-byte", raw_packet(type_bytes(GameReqHeartbeat.TYPE) + b"\x01")),
    ("tail_too_long", "chat-message-513", raw_packet(chat_plain(b"a" * (CHAT_MESSAGE_MAX + 1)))),
    ("wrong_size", "chat-message-short-read", raw_packet(chat_plain(b"abcd", count=6))),
    ("wrong_size", "chat-message-trailing", raw_packet(chat_plain(b"abcd", count=2))),
    ("wrong_size", "chat-message-no-count", raw_packet(struct.pack("<Hq", 5, 1))),
]


#: The client messages of the game and chat ports (no type is in both).
CLIENT_TYPES = GAME_CLIENT_MESSAGES | CHAT_CLIENT_MESSAGES


def test_violation_cases_cover_every_reason() -> None:
    assert {reason for reason, _, _ in VIOLATION_CASES} == set(VIOLATIONS)


@pytest.mark.parametrize(
    ("reason", "packet"),
    [
        pytest.param(reason, packet, id=f"{reason}-{name}")
        for reason, name, packet in VIOLATION_CASES
    ],
)
def test_violation_raises_with_its_reason(reason: str, packet: bytes) -> None:
    decoder = Codec().decoder(CLIENT_TYPES)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(packet)
    assert info.value.reason == reason
    assert str(info.value).startswith(reason + ":")
    assert isinstance(info.value, ProtocolError)
    assert not isinstance(info.value, LocalProtocolError)


@pytest.mark.parametrize(
    ("reason", "packet"),
    [
        pytest.param(reason, packet, id=f"{reason}-{name}")
        for reason, name, packet in VIOLATION_CASES
    ],
)
def test_violation_is_sticky(reason: str, packet: bytes) -> None:
    decoder = Codec().decoder(CLIENT_TYPES)
    with pytest.raises(RemoteProtocolError) as first:
        decoder.feed(GOOD_ECHO + packet)  # the good message before it is not returned
    for later in (b"", GOOD_ECHO, packet):
        with pytest.raises(RemoteProtocolError) as again:
            decoder.feed(later)
        assert again.value.reason == reason
        assert again.value is first.value
    assert decoder.buffered == 0


def test_violation_split_across_feeds_raises_on_completion() -> None:
    packet = _flip_last_byte(GOOD_ECHO)
    decoder = Codec().decoder(GAME_CLIENT_MESSAGES)
    assert decoder.feed(GOOD_ECHO + packet[:-1]) == [GameReqEcho(7, 123456)]
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(packet[-1:])
    assert info.value.reason == "bad_checksum"


def test_too_long_is_raised_as_soon_as_the_header_arrives() -> None:
    header = raw_packet(b"", length=MAX_PAYLOAD + 1)
    assert len(header) == 5
    decoder = Codec().decoder(GAME_CLIENT_MESSAGES)
    assert decoder.feed(header[:4]) == []
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(header[4:])  # no payload byte has arrived
    assert info.value.reason == "too_long"


def test_len_5000_header_alone_is_not_too_long() -> None:
    decoder = Codec().decoder(GAME_CLIENT_MESSAGES)
    assert decoder.feed(raw_packet(b"", length=MAX_PAYLOAD)) == []
    assert decoder.buffered == 5


def test_server_message_is_unknown_to_a_client_messages_decoder() -> None:
    c = Codec()
    for message in (GameResEcho(1, 2), GameResLogin(1, 2)):
        with pytest.raises(RemoteProtocolError) as info:
            c.decoder(GAME_CLIENT_MESSAGES).feed(c.encode(message))
        assert info.value.reason == "unknown_type"


def test_client_message_is_unknown_to_a_server_messages_decoder() -> None:
    c = Codec()
    with pytest.raises(RemoteProtocolError) as info:
        c.decoder(SERVER_MESSAGES).feed(c.encode(GameReqEcho(1, 2)))
    assert info.value.reason == "unknown_type"


def test_decoder_with_non_default_code_rejects_default_code() -> None:
    packet = Codec().encode(GameReqEcho(1, 2))
    with pytest.raises(RemoteProtocolError) as info:
        Codec(code=120).decoder(GAME_CLIENT_MESSAGES).feed(packet)
    assert info.value.reason == "bad_code"


def test_decoder_with_non_default_code_accepts_its_own_code() -> None:
    c = Codec(code=120)
    assert c.decoder(GAME_CLIENT_MESSAGES).feed(c.encode(GameReqEcho(1, 2))) == [GameReqEcho(1, 2)]


# ------------------------------------------------------------------------- local errors


def test_max_size_payload_is_framed() -> None:
    packet = Codec().frame(bytes(MAX_PAYLOAD), rand=3)
    assert len(packet) == MAX_PACKET
    assert HEADER.unpack_from(packet)[1] == MAX_PAYLOAD


def test_oversize_payload_raises_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        Codec().frame(bytes(MAX_PAYLOAD + 1))


@pytest.mark.parametrize("size", [0, 63, 65])
@pytest.mark.parametrize("mtype", [LoginReqLogin.TYPE, GameReqLogin.TYPE])
def test_wrong_length_session_key_raises_local_protocol_error(mtype: int, size: int) -> None:
    fields = (1, b"k" * size) if mtype == LoginReqLogin.TYPE else (1, b"k" * size, 1)
    with pytest.raises(LocalProtocolError):
        Codec().encode_fields(mtype, fields)


@pytest.mark.parametrize(
    ("index", "text"),
    [
        (2, "a" * 21),
        (3, KOREAN_20 + "가"),
        (3, "😀" * 10 + "a"),  # 21 UTF-16 units though only 11 code points
        (4, "1" * 17),
        (6, "1" * 17),
    ],
    ids=["user_id-21", "nickname-korean-21", "nickname-emoji-21-units", "game_ip-17", "chat_ip-17"],
)
def test_too_long_wchar_raises_local_protocol_error(index: int, text: str) -> None:
    fields = list(REPRESENTATIVES[1])
    fields[index] = text
    with pytest.raises(LocalProtocolError):
        Codec().encode(LoginResLogin(*fields))


def test_unencodable_text_raises_local_protocol_error() -> None:
    message = LoginResLogin(1, LoginStatus.OK, "\ud800", "", "", 1, "", 1)  # lone surrogate
    with pytest.raises(LocalProtocolError):
        Codec().encode(message)


@pytest.mark.parametrize("mtype", [0, 1000, 9999, 10002])
def test_unknown_type_to_encode_fields_raises_local_protocol_error(mtype: int) -> None:
    with pytest.raises(LocalProtocolError):
        Codec().encode_fields(mtype, ())


@pytest.mark.parametrize(
    "message",
    [
        GameReqEcho(INT64_MAX + 1, 0),
        GameReqEcho(0, INT64_MIN - 1),
        GameResLogin(256, 1),
        LoginResLogin(1, LoginStatus.NONE, "", "", "", 1, "", 1),  # internal, never sent
        LoginResLogin(1, 1, "", "", "", 65536, "", 1),
        GameReqLogin(1, bytes(64), 2**31),
    ],
    ids=[
        "account-overflow",
        "tick-underflow",
        "status-256",
        "status-none",
        "port-65536",
        "version",
    ],
)
def test_out_of_range_field_raises_local_protocol_error(message: object) -> None:
    with pytest.raises(LocalProtocolError):
        Codec().encode(message)


def test_wrong_field_count_without_converters_raises_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        Codec().encode_fields(GameReqEcho.TYPE, (1,))
    with pytest.raises(LocalProtocolError):
        Codec().encode_fields(GameReqEcho.TYPE, (1, 2, 3))


@pytest.mark.parametrize("mtype", [LoginReqLogin.TYPE, GameReqLogin.TYPE, LoginResLogin.TYPE])
def test_too_few_fields_with_converters_raises_local_protocol_error(mtype: int) -> None:
    with pytest.raises(LocalProtocolError):
        Codec().encode_fields(mtype, (1,))


@pytest.mark.parametrize("bad", [None, 123, b"bytes"], ids=["none", "int", "bytes"])
def test_non_str_wchar_field_raises_local_protocol_error(bad: object) -> None:
    with pytest.raises(LocalProtocolError):
        Codec().encode_fields(LoginResLogin.TYPE, (1, 1, bad, "", "", 1, "", 1))


@pytest.mark.parametrize(
    "kwargs",
    [{"code": 256}, {"code": -1}, {"key1": 256}, {"key2": -1}],
    ids=["code-256", "code-neg", "key1-256", "key2-neg"],
)
def test_codec_settings_out_of_range_raise_value_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Codec(**kwargs)


def test_codec_settings_at_the_bounds_are_accepted() -> None:
    assert Codec(code=0, key1=0, key2=0).key == 0
    assert Codec(code=255, key1=255, key2=0).key == 255
    assert Codec().key == 0xB6
    assert codec.MAX_PACKET == 5005


@pytest.mark.parametrize("rand", [-1, 256])
def test_rand_out_of_range_raises_local_protocol_error(rand: int) -> None:
    with pytest.raises(LocalProtocolError):
        Codec().frame(b"\x8a\x13", rand=rand)


# ----------------------------------------------------------------------- split (the relay's side)


@settings(max_examples=200, deadline=None)
@given(
    ticks=st.lists(st.tuples(int64, st.booleans()), min_size=1, max_size=30),
    limit=st.integers(1, 8),
    data=st.data(),
)
def test_property_split_then_decode_far_away_equals_decoding_here(
    ticks: list[tuple[int, bool]], limit: int, data: st.DataObject
) -> None:
    """What a gateway relays (split) and a worker decodes is what decoding at the gateway gave,
    however the stream is cut and whatever the per-call limit."""
    c = Codec()
    messages = [GameReqHeartbeat() if beat else GameReqEcho(7, tick) for tick, beat in ticks]
    stream = b"".join(c.encode(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="cuts"))
    chunks = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    relay = c.decoder(GAME_CLIENT_MESSAGES, records=False)
    far = c.decoder(GAME_CLIENT_MESSAGES, records=False)
    decoded: list[object] = []
    relayed = 0
    for chunk in [*chunks, *[b""] * len(messages)]:  # empty calls drain what a limit left
        packets, count = relay.split(chunk, limit)
        assert count <= limit
        got = far.feed(packets)
        assert len(got) == count  # whole packets only: the far end never buffers a part
        assert far.buffered == 0
        decoded += got
        relayed += count
    assert relayed == len(messages)
    assert decoded == [(m.TYPE, tuple(m)) for m in messages]  # type: ignore[attr-defined]
    assert relay.buffered == 0


def test_split_returns_the_bytes_as_received_and_keeps_a_partial_packet() -> None:
    c = Codec()
    one, two = c.encode(GameReqEcho(7, 1)), c.encode(GameReqEcho(7, 2))
    decoder = c.decoder(GAME_CLIENT_MESSAGES)
    assert decoder.split(one + two[:3]) == (one, 1)
    assert decoder.buffered == 3 and not decoder.has_packet()
    assert decoder.split(two[3:]) == (two, 1)
    assert decoder.split() == (b"", 0)


def test_split_with_a_limit_leaves_the_rest_for_split_or_feed() -> None:
    """A session switches from decoding (before its login is answered) to relaying: the buffer
    is shared, nothing is lost or repeated at the switch."""
    c = Codec()
    echoes = [GameReqEcho(7, tick) for tick in range(6)]
    packets = [c.encode(m) for m in echoes]
    decoder = c.decoder(GAME_CLIENT_MESSAGES)
    assert decoder.feed(b"".join(packets), limit=2) == echoes[:2]
    assert decoder.split(limit=0) == (b"", 0)
    assert decoder.split(limit=3) == (b"".join(packets[2:5]), 3)
    assert decoder.feed() == echoes[5:]


@pytest.mark.parametrize(
    ("reason", "packet"),
    [
        pytest.param(reason, packet, id=f"{reason}-{name}")
        for reason, name, packet in VIOLATION_CASES
        if reason in ("bad_code", "too_long")
    ],
)
def test_split_raises_framing_violations_sticky(reason: str, packet: bytes) -> None:
    decoder = Codec().decoder(GAME_CLIENT_MESSAGES)
    with pytest.raises(RemoteProtocolError) as first:
        decoder.split(GOOD_ECHO + packet)
    assert first.value.reason == reason
    with pytest.raises(RemoteProtocolError) as again:
        decoder.split(GOOD_ECHO)
    assert again.value is first.value
    assert decoder.buffered == 0


@pytest.mark.parametrize(
    ("reason", "packet"),
    [
        pytest.param(reason, packet, id=f"{reason}-{name}")
        for reason, name, packet in VIOLATION_CASES
        if reason not in ("bad_code", "too_long")
    ],
)
def test_split_passes_payload_violations_on_for_the_far_end_to_judge(
    reason: str, packet: bytes
) -> None:
    """Only the framing is checked by split; the decoder at the far end raises the rest."""
    relay = Codec().decoder(CLIENT_TYPES)
    packets, count = relay.split(GOOD_ECHO + packet)
    assert (packets, count) == (GOOD_ECHO + packet, 2)
    with pytest.raises(RemoteProtocolError) as info:
        Codec().decoder(CLIENT_TYPES).feed(packets)
    assert info.value.reason == reason


# ----------------------------------------------------------------------- retype (echo answers)


@settings(max_examples=300, deadline=None)
@given(account=int64, tick=int64, rand=st.integers(0, 255), key1=st.integers(0, 255),
       key2=st.integers(0, 255), code=st.integers(0, 255))  # fmt: skip
def test_retype_of_an_echo_is_byte_for_byte_the_encoded_answer_with_the_same_r(
    account: int, tick: int, rand: int, key1: int, key2: int, code: int
) -> None:
    c = Codec(code, key1, key2)
    request = c.encode(GameReqEcho(account, tick), rand=rand)
    answer = c.retype(request, GameResEcho.TYPE)
    assert answer == c.encode(GameResEcho(account, tick), rand=rand)
    assert c.decoder(SERVER_MESSAGES).feed(answer) == [GameResEcho(account, tick)]


def test_echo_request_and_answer_have_the_same_body_so_retype_applies() -> None:
    request, answer = SPECS[GameReqEcho.TYPE], SPECS[GameResEcho.TYPE]
    assert request.size == answer.size and request.body.format == answer.body.format


def test_a_packets_decoder_yields_each_packet_as_received_with_its_fields() -> None:
    c = Codec()
    messages = [GameReqEcho(7, 1), GameReqHeartbeat(), GameReqEcho(7, 2)]
    packets = [c.encode(m) for m in messages]
    stream = b"".join(packets)
    decoded = c.decoder(GAME_CLIENT_MESSAGES, records=False, packets=True).feed(stream)
    assert decoded == [(m.TYPE, tuple(m), p) for m, p in zip(messages, packets, strict=True)]


# ----------------------------------------------------------------------- the chat port's messages


@settings(max_examples=200, deadline=None)
@given(account=int64, size=st.integers(0, CHAT_MESSAGE_MAX), data=st.data())
def test_property_chat_messages_of_any_allowed_length_round_trip(
    account: int, size: int, data: st.DataObject
) -> None:
    message = data.draw(st.binary(min_size=size, max_size=size), label="message")
    c = Codec()
    request = c.encode(ChatReqMessage(account, message))
    assert len(request) == 5 + 12 + size  # fixed part, MessageLen, the bytes, nothing else
    assert c.decoder(CHAT_CLIENT_MESSAGES).feed(request) == [ChatReqMessage(account, message)]
    answer = ChatResMessage(account, "id", "nick", message)
    assert c.decoder(CHAT_SERVER_MESSAGES).feed(c.encode(answer)) == [answer]


def test_chat_message_lengths_at_and_past_the_bound() -> None:
    c = Codec()
    assert c.decoder(CHAT_CLIENT_MESSAGES).feed(
        raw_packet(chat_plain(b"x" * CHAT_MESSAGE_MAX))
    ) == [ChatReqMessage(7, b"x" * CHAT_MESSAGE_MAX)]
    with pytest.raises(LocalProtocolError):
        c.encode(ChatReqMessage(7, b"x" * (CHAT_MESSAGE_MAX + 1)))


def test_chat_login_id_and_nickname_end_at_the_first_nul() -> None:
    """Original clients leave bytes after the NUL of ID and Nickname: they are ignored."""
    user_id = "tester".encode("utf-16-le") + b"\0\0" + "JUNK".encode("utf-16-le")
    nickname = "닉".encode("utf-16-le") + b"\0\0" + b"\xff" * 10
    plain = struct.pack("<Hq40s40s64s", ChatReqLogin.TYPE, 42, user_id, nickname, b"k" * 64)
    (login,) = Codec().decoder(CHAT_CLIENT_MESSAGES).feed(raw_packet(plain))
    assert login == ChatReqLogin(42, "tester", "닉", b"k" * 64)


def test_chat_sector_move_layout_is_account_then_x_then_y() -> None:
    packet = Codec().encode(ChatReqSectorMove(42, 3, 99), rand=0)
    mask = packet[3]
    plain = bytes(b ^ mask for b in packet[5:])
    assert plain == struct.pack("<HqHH", 3, 42, 3, 99)
    assert Codec().decoder(CHAT_SERVER_MESSAGES).feed(
        Codec().encode(ChatResSectorMove(42, 3, 99))
    ) == [ChatResSectorMove(42, 3, 99)]


def test_chat_types_are_checked_as_bus_items_too() -> None:
    """The bus carries chat messages with their Python field types, the tail as bytes."""
    from cluster import bus

    assert bus.ITEM_FIELDS[ChatReqMessage.TYPE] == (int, bytes)
    assert bus.ITEM_FIELDS[ChatResMessage.TYPE] == (int, str, str, bytes)
    assert bus.ITEM_FIELDS[ChatReqLogin.TYPE] == (int, str, str, bytes)
    body = bus.pack_body([[1, ChatReqMessage.TYPE, 7, b"hi"], [2, ChatReqMessage.TYPE, 7, 5]])
    items, bad = bus.parse_items(body)
    assert items == [(1, ChatReqMessage.TYPE, [7, b"hi"])] and bad == 1
