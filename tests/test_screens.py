"""The console screens and the log summary line (cluster.launch.screens): aggregation, layout, and
robustness against odd samples."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from cluster.launch.screens import (
    fmt,
    login_latency,
    render_screens,
    short_id,
    summary_line,
)

NOW = 1_700_000_000.0


def hw(cpu: float, available: float, nonpaged: float, recv: float, send: float) -> dict[str, Any]:
    return {
        "cpu_total": cpu,
        "available_mb": available,
        "nonpaged_mb": nonpaged,
        "net_recv_kbps": recv,
        "net_send_kbps": send,
    }


HW_A_OLD = hw(10.0, 9000.0, 100.0, 1.0, 1.0)
HW_A = hw(35.5, 12345.0, 210.0, 820.4, 790.0)
HW_B = hw(61.0, 7000.0, 180.0, 400.0, 380.0)


def sample(role: str, host: str, pid: int, age: float = 0.2, **fields: Any) -> dict[str, Any]:
    """A sample as cluster.stats.ProcessSampler builds it (taken `age` seconds before NOW)."""
    base: dict[str, Any] = {
        "id": f"{role}@{host}/{pid}/{pid:04x}beef",
        "role": role,
        "host": host,
        "pid": pid,
        "time": NOW - age,
        "cpu_percent": 1.0,
        "memory_mb": 30.0,
        "packet_pool": 0,
        "sessions": 0,
        "hw": HW_A if host == "host-a" else HW_B,
    }
    base.update(fields)
    return base


def cluster_samples() -> list[dict[str, Any]]:
    """1 broker, 2 gateways, 2 auth, 3 game workers, 1 monitor on two hosts."""
    return [
        sample("broker", "host-a", 100, peers=8, routed_tps=24000.0, placed_tps=12.0),
        sample("gateway", "host-a", 200, sessions=130, sessions_login=5, sessions_game=125,
               accept_total_login=1000, accept_total_game=900, accept_tps_login=7.0,
               accept_tps_game=6.0, recv_tps=7000.0, send_tps=6900.0, packet_pool=11,
               cpu_percent=40.0, drops={"timeout": 2, "bad_header": 1}),
        sample("gateway", "host-b", 201, sessions=90, sessions_login=3, sessions_game=87,
               accept_total_login=500, accept_total_game=450, accept_tps_login=5.0,
               accept_tps_game=4.0, recv_tps=5000.0, send_tps=5100.0, packet_pool=4,
               cpu_percent=30.0, drops={"timeout": 3, "bad_checksum": 4}),
        sample("auth", "host-a", 300, sessions=2, packet_pool=2, login_success_tps=9.0,
               login_total=3000, login_latency_min_ms=1.0, login_latency_avg_ms=2.0,
               login_latency_max_ms=8.0, cpu_percent=12.0, memory_mb=41.0),
        sample("auth", "host-b", 301, sessions=1, packet_pool=1, login_success_tps=3.0,
               login_total=1000, login_latency_min_ms=0.5, login_latency_avg_ms=6.0,
               login_latency_max_ms=20.0, cpu_percent=8.0, memory_mb=39.0),
        sample("game", "host-a", 400, sessions=70, session_auth=5, session_game=65,
               auth_fps=49.0, game_fps=50.0, recv_tps=4000.0, send_tps=4000.0, login_tps=3.0,
               packet_pool=6, cpu_percent=20.0, memory_mb=50.0, drops={"timeout": 1}),
        sample("game", "host-b", 401, sessions=80, session_auth=0, session_game=80,
               auth_fps=51.0, game_fps=48.0, recv_tps=4500.0, send_tps=4500.0, login_tps=4.0,
               packet_pool=7, cpu_percent=22.0, memory_mb=52.0),
        sample("game", "host-b", 402, sessions=62, session_auth=2, session_game=60,
               auth_fps=50.0, game_fps=47.0, recv_tps=3500.0, send_tps=3500.0, login_tps=5.0,
               packet_pool=8, cpu_percent=18.0, memory_mb=48.0),
        sample("monitor", "host-a", 500, processes=9),
    ]  # fmt: skip


def chat_samples() -> list[dict[str, Any]]:
    """2 chat workers, one per host, with every role field of the chat contract."""
    return [
        sample("chat", "host-a", 700, sessions=25, session_auth=1, session_login=24,
               sectors_occupied=20, sector_max=3, message_tps=150.0, delivery_tps=1200.0,
               cast_in_tps=30.0, cast_out_tps=40.0, update_tps=49.0, recv_tps=160.0,
               send_tps=1200.0, packet_pool=5, pending_keys=2, key_miss=1, login_tps=2.0,
               cpu_percent=9.0, memory_mb=33.0, drops={"timeout": 2}),
        sample("chat", "host-b", 701, sessions=15, session_auth=0, session_login=15,
               sectors_occupied=12, sector_max=4, message_tps=90.0, delivery_tps=800.0,
               cast_in_tps=40.0, cast_out_tps=35.0, update_tps=50.0, recv_tps=95.0,
               send_tps=800.0, packet_pool=3, pending_keys=0, key_miss=2, login_tps=1.0,
               cpu_percent=7.0, memory_mb=31.0),
    ]  # fmt: skip


GATEWAY_CHAT = {
    200: {"sessions_chat": 40, "accept_total_chat": 77, "accept_tps_chat": 2.0},
    201: {"sessions_chat": 25, "accept_total_chat": 33, "accept_tps_chat": 1.0},
}


def with_chat(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`samples` plus the chat workers, the gateways' chat port figures added (and counted in
    their ``sessions``)."""
    out = []
    for s in samples:
        extra = GATEWAY_CHAT.get(s["pid"], {}) if s["role"] == "gateway" else {}
        if extra:
            s = {**s, **extra, "sessions": s["sessions"] + extra["sessions_chat"]}
        out.append(s)
    return out + chat_samples()


def figure(screen: str, label: str) -> str:
    """The value right after ``label :`` on the screen."""
    match = re.search(rf"(?:^|  |^ ){re.escape(label)}\s*:\s+(\S+(?: / \S+| - \S+)?)", screen,
                      re.MULTILINE)  # fmt: skip
    assert match, f"{label!r} not on the screen:\n{screen}"
    return match.group(1)


def section(screen: str, name: str) -> str:
    """The lines of one ``== name`` section, up to the next section or GONE line."""
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"== {name}"))
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith(("== ", "GONE "))),
        len(lines),
    )
    return "\n".join(lines[start:end])


@pytest.fixture
def screen() -> str:
    return render_screens(cluster_samples(), [], NOW)


def test_sections_come_in_order(screen: str) -> None:
    names = [line.split()[1] for line in screen.splitlines() if line.startswith("== ")]
    assert names == ["HARDWARE", "MonitoringServer", "LoginServer", "GameServer", "Drops"]


def test_header_has_local_time_and_roles(screen: str) -> None:
    head = screen.splitlines()[0]
    assert head.startswith(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(NOW)))
    assert "live 9:" in head
    assert "broker 1  gateway 2  auth 2  game 3  monitor 1" in head
    assert "gone 0" in head


def test_hardware_is_per_host_with_the_newest_sample() -> None:
    samples = cluster_samples()
    samples.append(sample("broker", "host-a", 101, age=30.0, hw=HW_A_OLD))
    hardware = section(render_screens(samples, [], NOW), "HARDWARE")
    lines = hardware.splitlines()
    assert lines[1].split() == ["host-a", "host-b"]
    rows = {line[:26].strip(): line[26:].split() for line in lines[2:]}
    assert rows["HW CPU Usage %"] == ["35.5", "61"]
    assert rows["HW Available Memory M"] == ["12345", "7000"]
    assert rows["HW NonPaged Memory M"] == ["210", "180"]
    assert rows["Ethernet Recv K/s"] == ["820", "400"]
    assert rows["Ethernet Send K/s"] == ["790", "380"]


def test_login_server_adds_up_auth_workers_and_login_port(screen: str) -> None:
    login = section(screen, "LoginServer")
    assert figure(login, "LoginSuccess TPS") == "12"
    # weighted by TPS: (2.0 * 9 + 6.0 * 3) / 12 = 3.0, not the plain mean 4.0
    assert figure(login, "CompleteTime Avr") == "3"
    assert figure(login, "CompleteTime Min/Max") == "0.50 / 20"
    assert figure(login, "ConnectSession") == "8"
    # SessionAll: the login ports' sessions (3 + 5), not the auth workers' logins in flight (2 + 1)
    assert figure(login, "SessionAll") == "8"
    assert "in flight" in login.splitlines()[-3]
    assert figure(login, "Accept TPS") == "12"
    assert figure(login, "Accept Total") == "1500"
    assert figure(login, "RecvPacket TPS") == "12000"  # the gateways' packets, all ports
    assert figure(login, "SendPacket TPS") == "12000"
    assert figure(login, "PacketPool Use") == "18"  # 11 + 4 (gateways) + 2 + 1 (auth)
    assert figure(login, "CPU Usage") == "20"
    assert figure(login, "Commit Memory") == "80"


def test_game_server_adds_up_game_workers_and_game_port(screen: str) -> None:
    game = section(screen, "GameServer")
    assert figure(game, "AcceptSocket") == "212"
    assert figure(game, "ALL Mode") == "212"
    assert figure(game, "Auth Mode") == "7"
    assert figure(game, "Game Mode") == "205"
    assert figure(game, "Auth Update FPS") == "49 - 51"
    assert figure(game, "Auth Update FPS sum") == "150"
    assert figure(game, "Game Update FPS") == "47 - 50"
    assert figure(game, "Game Update FPS sum") == "145"
    assert figure(game, "Packet Proc TPS") == "12000"
    assert figure(game, "Packet Send TPS") == "12000"
    assert figure(game, "Accept TPS") == "10"
    assert figure(game, "Accept Total") == "1350"
    assert figure(game, "Packet Pool use") == "21"
    assert figure(game, "CPU Usage") == "60"
    assert figure(game, "Commit Memory") == "150"


def test_one_line_per_auth_and_game_worker(screen: str) -> None:
    login, game = section(screen, "LoginServer"), section(screen, "GameServer")
    assert [line.split() for line in login.splitlines() if "/300/" in line or "/301/" in line] == [
        ["host-a/300/012c", "2", "9", "2", "12", "41"],
        ["host-b/301/012d", "1", "3", "6", "8", "39"],
    ]
    rows = [line.split() for line in game.splitlines() if re.search(r"/40[0-2]/", line)]
    assert rows == [
        ["host-a/400/0190", "70", "49", "50", "4000", "4000", "20", "50"],
        ["host-b/401/0191", "80", "51", "48", "4500", "4500", "22", "52"],
        ["host-b/402/0192", "62", "50", "47", "3500", "3500", "18", "48"],
    ]


@pytest.fixture
def chat_screen() -> str:
    return render_screens(with_chat(cluster_samples()), [], NOW, width=140)


def test_chat_server_comes_after_the_game_server(chat_screen: str) -> None:
    names = [line.split()[1] for line in chat_screen.splitlines() if line.startswith("== ")]
    assert names == [
        "HARDWARE", "MonitoringServer", "LoginServer", "GameServer", "ChatServer", "Drops",
    ]  # fmt: skip
    head = chat_screen.splitlines()[0]
    assert "live 11:" in head
    assert "broker 1  gateway 2  auth 2  game 3  chat 2  monitor 1" in head


def test_chat_server_adds_up_chat_workers_and_chat_port(chat_screen: str) -> None:
    chat = section(chat_screen, "ChatServer")
    assert chat.startswith("== ChatServer (chat workers: 2)")
    assert figure(chat, "Update TPS") == "49 - 50"
    assert figure(chat, "Update TPS sum") == "99"
    assert figure(chat, "MessagePool Use") == "8"  # the chat workers' packet_pool
    assert figure(chat, "MessageTPS") == "240"
    assert figure(chat, "Delivery TPS") == "2000"
    assert figure(chat, "Cast In / Out TPS") == "70 / 75"
    assert figure(chat, "PlayerPool") == "40"  # every session
    assert figure(chat, "PlayerCount") == "39"  # logged in
    assert figure(chat, "Not Logged In") == "1"
    assert figure(chat, "Login TPS") == "3"
    assert figure(chat, "SessionKey Miss") == "3"
    assert figure(chat, "LoginMap Size") == "2"
    assert figure(chat, "Sectors Occupied") == "32"
    assert figure(chat, "Sector Max") == "4"  # the most crowded sector of any worker
    assert figure(chat, "CPU Usage") == "16"
    assert figure(chat, "Commit Memory") == "64"
    # the Net Server block: the gateways' chat port, the chat workers' packets
    assert figure(chat, "ConnectSession") == "65"
    assert figure(chat, "PacketPool Use") == "23"  # 11 + 4 (gateways) + 5 + 3 (chat)
    assert figure(chat, "Accept TPS") == "3"
    assert figure(chat, "Accept Total") == "110"
    assert figure(chat, "RecvPacket TPS") == "255"
    assert figure(chat, "SendPacket TPS") == "2000"


def test_one_line_per_chat_worker(chat_screen: str) -> None:
    chat = section(chat_screen, "ChatServer")
    header = next(line.split() for line in chat.splitlines() if line.startswith(" chat worker"))
    assert header[2:] == ["sessions", "Players", "MsgTPS", "DelivTPS", "UpdTPS", "CPU", "%",
                          "Commit", "M"]  # fmt: skip
    rows = [line.split() for line in chat.splitlines() if re.search(r"/70[01]/", line)]
    assert rows == [
        ["host-a/700/02bc", "25", "24", "150", "1200", "49", "9", "33"],
        ["host-b/701/02bd", "15", "15", "90", "800", "50", "7", "31"],
    ]


def test_monitoring_server_lines_per_server_on(chat_screen: str) -> None:
    servers = section(chat_screen, "MonitoringServer").splitlines()[1:]
    assert servers == [
        " Login: SESSION 8  LoginSuccess TPS 12  Packet Pool 18  CPU 20%  Commit 80M",
        " Chat : SESSION 40  PLAYER 39  MSG Pool 8  MSG TPS 240  Packet Pool 23  CPU 16%"
        "  Commit 64M",
        " Echo : ALL 212  Auth 7  Game 205  Auth FPS 49 - 51  Game FPS 47 - 50  Packet Pool 21"
        "  CPU 60%  Commit 150M",
    ]
    only_chat = [s for s in with_chat(cluster_samples()) if s["role"] in ("chat", "gateway")]
    lines = section(render_screens(only_chat, [], NOW), "MonitoringServer").splitlines()
    assert [line[:7] for line in lines[1:]] == [" Chat :"]
    narrow = section(render_screens(with_chat(cluster_samples()), [], NOW, width=60),
                     "MonitoringServer")  # fmt: skip
    echo = narrow.splitlines()[narrow.splitlines().index(next(
        line for line in narrow.splitlines() if line.startswith(" Echo :"))):]  # fmt: skip
    assert len(echo) > 1 and all(line.startswith("        ") for line in echo[1:])
    assert " ".join(echo).split()[-1] == "150M"


def test_chat_server_shows_a_chat_port_without_chat_workers() -> None:
    samples = [s for s in with_chat(cluster_samples()) if s["role"] != "chat"]
    screen = render_screens(samples, [], NOW)
    chat = section(screen, "ChatServer")
    assert chat.startswith("== ChatServer (chat workers: 0)")
    assert figure(chat, "ConnectSession") == "65"
    assert figure(chat, "Update TPS") == "-"
    assert figure(chat, "Sector Max") == "-"
    assert " Chat :" not in screen  # the MonitoringServer lists only servers that are on
    no_port = render_screens(cluster_samples() + chat_samples(), [], NOW)
    assert figure(section(no_port, "ChatServer"), "ConnectSession") == "0"
    unused = [{**s, "sessions_chat": 0, "accept_total_chat": 0, "accept_tps_chat": 0.0}
              if s["role"] == "gateway" else s for s in cluster_samples()]  # fmt: skip
    assert "ChatServer" not in render_screens(unused, [], NOW)  # chat is off


def test_summary_line_with_chat_workers() -> None:
    pairs = dict(pair.split("=") for pair in summary_line(with_chat(cluster_samples()), []).split())
    assert pairs["players"] == "39" and pairs["msg_tps"] == "240"
    assert pairs["sessions"] == "285"  # the gateways' sessions, chat port included
    assert pairs["drops"] == "13"


def test_chat_samples_missing_fields_render() -> None:
    odd: list[dict[str, Any]] = [
        {"id": "chat@x/1/00000001", "role": "chat"},
        {"id": "chat@x/2/00000002", "role": "chat", "update_tps": "fast", "key_miss": True,
         "sector_max": None},
        {"role": "gateway", "sessions_chat": "many", "accept_total_chat": 3},
    ]  # fmt: skip
    screen = render_screens(odd, [], NOW)
    chat = section(screen, "ChatServer")
    assert figure(chat, "Update TPS") == "0 - 0"
    assert figure(chat, "SessionKey Miss") == "0"
    assert figure(chat, "Accept Total") == "3"
    assert summary_line(odd, []).startswith("procs=3 gone=0 ")


def test_drops_are_summed_by_reason_across_processes(screen: str) -> None:
    drops = section(screen, "Drops")
    assert drops.startswith("== Drops (total 11)")
    assert drops.splitlines()[1].split() == [
        "bad_checksum=4", "bad_header=1", "timeout=6",
    ]  # fmt: skip


@pytest.mark.parametrize("width", [40, 60, 80, 100, 140])
def test_no_line_is_wider_than_width(width: int) -> None:
    gone = [sample("game", "a-very-long-host-name.example.internal", 999, age=90.0)]
    many = with_chat(cluster_samples()) + [
        sample("gateway", f"host-{n}.example.internal", 600 + n, drops={f"reason_{n}": n})
        for n in range(12)
    ]
    for line in render_screens(many, gone, NOW, width=width).splitlines():
        assert len(line) <= width, line


def test_empty_input_renders() -> None:
    screen = render_screens([], [], NOW)
    assert "live 0: none" in screen
    assert "no host figures yet" in screen
    assert figure(screen, "LoginSuccess TPS") == "0"
    assert figure(screen, "CompleteTime Avr") == "-"
    assert figure(screen, "Auth Update FPS") == "-"
    assert "Drops" not in screen
    assert "GONE" not in screen
    assert "MonitoringServer" not in screen and "ChatServer" not in screen


def test_samples_missing_optional_keys_render() -> None:
    odd: list[dict[str, Any]] = [
        {"id": "auth@x/1/00000001", "role": "auth"},
        {"id": "game@x/2/00000002", "role": "game", "auth_fps": "fast", "game_fps": True},
        {"role": "gateway", "drops": "none", "hw": None},
        {"id": b"game@y/3/00000003", "role": "game", "host": "y", "hw": {"cpu_total": "x"}},
        {},
    ]
    screen = render_screens(odd, [{}], NOW)
    assert figure(screen, "ALL Mode") == "0"
    assert figure(screen, "Auth Update FPS") == "0 - 0"
    assert "GONE ?" in screen
    assert summary_line(odd, [{}]).startswith("procs=5 gone=1 ")


def test_gone_processes_are_listed_latest_first() -> None:
    gone = [
        sample("game", "host-b", 403, age=125.0),
        sample("auth", "host-a", 302, age=3.0, heartbeat_age_s=7.5),
    ]
    lines = [line for line in render_screens(cluster_samples(), gone, NOW).splitlines()
             if line.startswith("GONE")]  # fmt: skip
    assert lines == [
        f"GONE auth     {gone[1]['id']} on host-a, last heard 7s ago",
        f"GONE game     {gone[0]['id']} on host-b, last heard 2m05s ago",
    ]


def test_samples_of_one_process_count_once_newest_wins() -> None:
    older = sample(
        "auth",
        "host-a",
        300,
        age=5.0,
        login_success_tps=100.0,
        login_latency_avg_ms=1.0,
        login_latency_min_ms=1.0,
        login_latency_max_ms=1.0,
    )
    screen = render_screens([older, *cluster_samples()], [], NOW)  # fmt: skip
    assert figure(section(screen, "LoginServer"), "LoginSuccess TPS") == "12"
    assert "live 9:" in screen.splitlines()[0]


def test_summary_line() -> None:
    gone = [sample("game", "host-b", 403, age=30.0)]
    line = summary_line(cluster_samples(), gone)
    assert "\n" not in line
    assert dict(pair.split("=") for pair in line.split()) == {
        "procs": "9",
        "gone": "1",
        "login_tps": "12",
        "login_avg_ms": "3",
        "sessions": "220",
        "auth_fps": "49",
        "game_fps": "47",
        "players": "-",
        "msg_tps": "-",
        "recv_tps": "12000",
        "send_tps": "12000",
        "drops": "11",
        "cpu_total": "61%",
    }
    assert summary_line([], []) == (
        "procs=0 gone=0 login_tps=0 login_avg_ms=- sessions=0 auth_fps=- game_fps=- "
        "players=- msg_tps=- recv_tps=0 send_tps=0 drops=0 cpu_total=-"
    )


def test_login_latency_without_tps_is_the_mean_of_nonzero_averages() -> None:
    idle = {"login_latency_avg_ms": 0.0, "login_latency_min_ms": 0.0, "login_latency_max_ms": 0.0}
    a = {"login_latency_avg_ms": 2.0, "login_latency_min_ms": 1.0, "login_latency_max_ms": 3.0}
    b = {"login_latency_avg_ms": 4.0, "login_latency_min_ms": 2.0, "login_latency_max_ms": 9.0}
    assert login_latency([idle, a, b]) == (3.0, 1.0, 9.0)
    assert login_latency([idle]) == (None, None, None)


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "-"), (0, "0"), (12.0, "12"), (3.14159, "3.14"), (42.25, "42.2"), (1234.6, "1235"),
     (12_345_678, "12.3M"), (float("nan"), "nan")],
)  # fmt: skip
def test_fmt(value: float | None, text: str) -> None:
    assert fmt(value) == text


def test_short_id() -> None:
    assert short_id({"id": "game@host-a.example.com/4321/deadbeef"}) == "host-a/4321/dead"
    assert short_id({"host": "h", "pid": 7}) == "h/7"
    long = short_id({"id": "game@" + "x" * 60 + "/4321/deadbeef"})
    assert len(long) <= 23 and long.endswith("/4321/dead")
