"""Prometheus exposition of the samples (cluster.metrics), read back with prometheus_client's
own parser: names, types, units, labels and HELP by the table (promtool itself runs in
tests/test_promtool.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.metrics import CONTENT_TYPE, FIELDS, HOST_FIELDS, exposition, metric_name
from tests.test_screens import HW_A, HW_A_OLD, HW_B, cluster_samples, hw, sample, with_chat

Series = dict[tuple[tuple[str, str], ...], float]


def parse(samples: list[dict[str, Any]]) -> dict[str, tuple[str, str, Series]]:
    """name -> (type, help, {sorted labels: value}) of the exposition of `samples` (a counter's
    name with its ``_total``, as Prometheus stores it)."""
    text = exposition(samples).decode("utf-8")
    families = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in families, f"family {family.name} twice"
        series: Series = {}
        for point in family.samples:
            key = tuple(sorted(point.labels.items()))
            assert key not in series, f"duplicate series {point.name}{key}"
            series[key] = point.value
        name = family.name + "_total" if family.type == "counter" else family.name
        families[name] = (family.type, family.documentation, series)
    return families


def labels(role: str, host: str, pid: int) -> tuple[tuple[str, str], ...]:
    ident = sample(role, host, pid)["id"]
    return (("host", host), ("process", ident), ("role", role))


@pytest.fixture
def families() -> dict[str, tuple[str, str, Series]]:
    return parse(cluster_samples())


def test_content_type_is_prometheus_text() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=")


def with_port(key: tuple[tuple[str, str], ...], **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((*key, *extra.items())))


def test_numeric_fields_become_labelled_gauges(families: dict[str, Any]) -> None:
    kind, help_text, series = families["cluster_login_success_tps"]
    assert kind == "gauge"
    assert help_text == FIELDS["login_success_tps"].help
    assert series == {labels("auth", "host-a", 300): 9.0, labels("auth", "host-b", 301): 3.0}
    assert families["cluster_session_game"][2] == {
        labels("game", "host-a", 400): 65.0,
        labels("game", "host-b", 401): 80.0,
        labels("game", "host-b", 402): 60.0,
    }
    assert families["cluster_routed_tps"][2] == {labels("broker", "host-a", 100): 24000.0}
    assert len(families["cluster_cpu_percent"][2]) == 9


def test_every_family_has_help_and_only_counters_end_in_total(families: dict[str, Any]) -> None:
    families = parse(with_chat(cluster_samples()))
    for name, (kind, help_text, _) in families.items():
        assert help_text, name
        assert (kind == "counter") == name.endswith("_total"), name
        assert kind in ("gauge", "counter"), name
    for field in (*FIELDS.values(), *HOST_FIELDS.values()):
        assert field.help and (field.kind == "counter") == field.name.endswith("_total"), field
        assert field.name == metric_name(field.name.removeprefix("cluster_")), field


def test_units_are_base_units() -> None:
    families = parse(cluster_samples())
    auth = labels("auth", "host-a", 300)
    assert families["cluster_memory_bytes"][2][auth] == 41.0 * 2**20
    assert families["cluster_login_latency_min_seconds"][2][auth] == 0.001
    assert families["cluster_login_latency_avg_seconds"][2][auth] == 0.002
    assert families["cluster_login_latency_max_seconds"][2][auth] == 0.008
    assert families["cluster_cpu_percent"][2][auth] == 12.0  # % of one core, as sent
    for name in families:
        assert not name.endswith(("_mb", "_ms", "_s", "_kbps")), name


def test_gateway_ports_are_one_family_with_a_port_label() -> None:
    families = parse(with_chat(cluster_samples()))
    gw_a, gw_b = labels("gateway", "host-a", 200), labels("gateway", "host-b", 201)
    kind, help_text, accepts = families["cluster_port_accepts_total"]
    assert kind == "counter" and "each client port" in help_text
    assert accepts == {
        with_port(gw_a, port="login"): 1000.0, with_port(gw_a, port="game"): 900.0,
        with_port(gw_a, port="chat"): 77.0, with_port(gw_b, port="login"): 500.0,
        with_port(gw_b, port="game"): 450.0, with_port(gw_b, port="chat"): 33.0,
    }  # fmt: skip
    assert families["cluster_port_sessions"][0] == "gauge"
    assert families["cluster_port_sessions"][2][with_port(gw_a, port="chat")] == 40.0
    assert families["cluster_port_sessions"][2][with_port(gw_b, port="game")] == 87.0
    assert families["cluster_port_accept_tps"][2][with_port(gw_b, port="chat")] == 1.0
    for gone in ("cluster_sessions_chat", "cluster_accept_total_login", "cluster_accept_tps_game"):
        assert gone not in families


CHAT_GAUGES = (
    "sessions", "session_auth", "session_login", "sectors_occupied", "sector_max", "message_tps",
    "delivery_tps", "cast_in_tps", "cast_out_tps", "update_tps", "recv_tps", "send_tps",
    "packet_pool", "pending_keys", "login_tps",
)  # fmt: skip


def test_chat_workers_are_exported_with_help() -> None:
    samples = with_chat(cluster_samples())
    samples[-1] = {**samples[-1], "message_total": 900, "delivery_total": 7000,
                   "message_no_sector": 4}  # fmt: skip
    families = parse(samples)
    chat_a, chat_b = labels("chat", "host-a", 700), labels("chat", "host-b", 701)
    for field in CHAT_GAUGES:
        kind, help_text, series = families[FIELDS[field].name]
        assert kind == "gauge"
        assert help_text == FIELDS[field].help  # its own text, not the fallback for unknown fields
        assert chat_a in series and chat_b in series, field
    assert families["cluster_session_login"][2] == {chat_a: 24.0, chat_b: 15.0}
    assert families["cluster_message_tps"][2] == {chat_a: 150.0, chat_b: 90.0}
    assert families["cluster_key_misses_total"][:1] == ("counter",)
    assert families["cluster_key_misses_total"][2] == {chat_a: 1.0, chat_b: 2.0}
    assert families["cluster_messages_total"][2] == {chat_b: 900.0}
    assert families["cluster_deliveries_total"][2] == {chat_b: 7000.0}
    assert families["cluster_messages_no_sector_total"][2] == {chat_b: 4.0}
    assert families["cluster_cast_out_tps"][2] == {chat_a: 40.0, chat_b: 35.0}
    # a field both game and chat workers report: one family, both roles
    roles = {dict(key)["role"] for key in families["cluster_session_auth"][2]}
    assert roles == {"game", "chat"}
    assert "chat" in FIELDS["session_auth"].help.lower()
    drops = tuple(sorted((*chat_a, ("reason", "timeout"))))
    assert families["cluster_drops_total"][2][drops] == 2.0
    assert families["cluster_up"][2][chat_b] == 1.0


def test_auth_and_web_totals_are_counters() -> None:
    web = sample("web", "host-a", 600, login_ok=5, login_invalid=2, login_locked=1,
                 login_rate_limited=3, login_bad_request=4, login_busy=0, login_unavailable=6,
                 lockouts=1, accounts_locked=1, hashing=2, rate_addresses=3,
                 login_ok_tps=0.5)  # fmt: skip
    families = parse([*cluster_samples(), web])
    key = labels("web", "host-a", 600)
    kind, help_text, series = families["cluster_web_logins_total"]
    assert kind == "counter" and help_text.startswith("Web login:")
    assert series == {with_port(key, result=r): v for r, v in (
        ("ok", 5.0), ("invalid", 2.0), ("locked", 1.0), ("rate_limited", 3.0),
        ("bad_request", 4.0), ("busy", 0.0), ("unavailable", 6.0))}  # fmt: skip
    assert families["cluster_web_lockouts_total"][:1] == ("counter",)
    assert families["cluster_web_lockouts_total"][2] == {key: 1.0}
    for gauge in ("accounts_locked", "hashing", "rate_addresses", "login_ok_tps"):
        assert families[f"cluster_{gauge}"][0] == "gauge"
    kind, _, logins = families["cluster_logins_total"]
    assert kind == "counter"
    assert logins == {labels("auth", "host-a", 300): 3000.0, labels("auth", "host-b", 301): 1000.0}


def test_time_pid_and_labels_are_not_exported(families: dict[str, Any]) -> None:
    for name in ("cluster_time", "cluster_pid", "cluster_id", "cluster_role", "cluster_host"):
        assert name not in families
    assert not [name for name in families if name.startswith("cluster_hw")]


def test_drops_are_a_counter_with_a_reason_label(families: dict[str, Any]) -> None:
    kind, help_text, series = families["cluster_drops_total"]
    assert kind == "counter" and help_text
    gw_a, gw_b = labels("gateway", "host-a", 200), labels("gateway", "host-b", 201)
    game = labels("game", "host-a", 400)
    expected = {
        (*gw_a, "timeout"): 2.0, (*gw_a, "bad_header"): 1.0,
        (*gw_b, "timeout"): 3.0, (*gw_b, "bad_checksum"): 4.0,
        (*game, "timeout"): 1.0,
    }  # fmt: skip
    got = {(*(kv for kv in key if kv[0] != "reason"), dict(key)["reason"]): v
           for key, v in series.items()}  # fmt: skip
    assert got == expected


HOST_NAMES = {
    "cpu_total": ("cluster_host_cpu_percent", 1.0),
    "available_mb": ("cluster_host_memory_available_bytes", 2.0**20),
    "nonpaged_mb": ("cluster_host_memory_nonpaged_bytes", 2.0**20),
    "net_recv_kbps": ("cluster_host_network_receive_bytes_per_second", 1024.0),
    "net_send_kbps": ("cluster_host_network_transmit_bytes_per_second", 1024.0),
}


def test_host_figures_one_series_per_host_newest_wins_in_base_units() -> None:
    samples = cluster_samples()
    samples.insert(0, sample("broker", "host-a", 101, age=30.0, hw=HW_A_OLD))
    samples.append(sample("broker", "host-b", 102, age=60.0, hw=hw(1, 2, 3, 4, 5)))
    families = parse(samples)
    for field, (name, scale) in HOST_NAMES.items():
        kind, help_text, series = families[name]
        assert kind == "gauge" and help_text == HOST_FIELDS[field].help
        assert series == {
            (("host", "host-a"),): HW_A[field] * scale,
            (("host", "host-b"),): HW_B[field] * scale,
        }


def test_up_and_sample_age_per_process() -> None:
    before = time.time()
    families = parse(cluster_samples())
    after = time.time()
    up = families["cluster_up"][2]
    assert len(up) == 9 and set(up.values()) == {1.0}
    ages = families["cluster_sample_age_seconds"][2]
    auth = sample("auth", "host-a", 300)
    age = ages[labels("auth", "host-a", 300)]
    assert before - auth["time"] <= age <= after - auth["time"]


def test_the_monitors_heartbeat_age_is_in_seconds() -> None:
    families = parse([sample("game", "host-a", 400, heartbeat_age_s=1.25)])
    assert families["cluster_heartbeat_age_seconds"][2] == {labels("game", "host-a", 400): 1.25}


def test_one_series_per_process_newest_sample_wins() -> None:
    old = sample("auth", "host-a", 300, age=10.0, login_success_tps=99.0)
    families = parse([old, *cluster_samples()])
    assert families["cluster_login_success_tps"][2][labels("auth", "host-a", 300)] == 9.0


def test_empty_input_is_valid_and_empty() -> None:
    assert exposition([]) == b""
    assert parse([]) == {}


def test_odd_samples_do_not_crash_or_make_invalid_text() -> None:
    odd: list[Any] = [
        {},
        {"role": "game", "host": "h", "pid": 1, "name": "text", "flag": True, "n": 3},
        {"id": b"gateway@h/2/x", "role": "gateway", "time": "soon", "drops": {"x": "many"}},
        {
            "id": 'q"uo\\te\nline',
            "role": 7,
            "weird-field.name": 1.5,
            "2x": 2,
            "up": 5,
            "drops": [1, 2],
            "hw": {"cpu_total": True, "available_mb": 10, "odd": "x"},
        },
        {
            "id": "auth@h/3/y",
            "role": "auth",
            "host_memory_available_bytes": 1,
            "sample_age_seconds": 9,
            "nested": {"a": 1},
            "none": None,
            "nan": float("nan"),
            "big": 10**20,
            "huge": 10**400,
            "jobs_total": 4,
            "time": 10**400,
        },
        "not a sample",
    ]
    families = parse(odd)
    assert "cluster_name" not in families
    assert "cluster_flag" not in families
    assert "cluster_nested" not in families
    assert "cluster_huge" not in families  # too large for a float: left out
    assert families["cluster_n"][2] == {(("host", "h"), ("process", "h/1"), ("role", "game")): 3.0}
    assert list(families["cluster_weird_field_name"][2].values()) == [1.5]
    assert list(families["cluster_2x"][2].values()) == [2.0]
    assert list(families["cluster_big"][2].values()) == [1e20]
    assert families["cluster_jobs_total"][0] == "counter"  # unknown, but named a total
    assert set(families["cluster_up"][2].values()) == {1.0}  # the field "up" does not count
    assert len(families["cluster_up"][2]) == 5
    assert families["cluster_host_memory_available_bytes"][2] == {
        (("host", "unknown"),): 10.0 * 2**20
    }
    assert "cluster_host_cpu_percent" not in families and "cluster_host_odd" not in families
    assert "cluster_sample_age_seconds" not in families  # no sample has a usable time
    quoted = labels_of(families["cluster_up"][2], 'q"uo\\te\nline')
    assert quoted == {"host": "unknown", "process": 'q"uo\\te\nline', "role": "7"}


def labels_of(series: Series, process: str) -> dict[str, str]:
    return next(dict(key) for key in series if dict(key)["process"] == process)


@pytest.mark.parametrize(
    ("field", "name"),
    [
        ("cpu_percent", "cluster_cpu_percent"),
        ("a-x.c", "cluster_a_x_c"),
        ("a-b.c", "cluster_ab_c"),
        ("é", "cluster_unnamed"),
        ("CamelCase", "cluster_camelcase"),
        ("latency_ms", "cluster_latencyms"),
        ("ms_latency", "cluster_mslatency"),
        ("ms", "cluster_fieldms"),
        ("size_kilobytes", "cluster_sizekilobytes"),
        ("wait_minutes_total", "cluster_waitminutes_total"),
        ("queue_gauge", "cluster_queuegauge"),
        ("req_count", "cluster_reqcount"),
        ("count_req", "cluster_count_req"),
        ("jobs_total", "cluster_jobs_total"),
    ],
)
def test_metric_name_is_sanitized_and_lint_safe(field: str, name: str) -> None:
    assert metric_name(field) == name


def test_unknown_fields_never_take_a_name_of_the_table() -> None:
    known = sample("game", "host-a", 400, memory_bytes=5, memory_mb=2.0, port_sessions=3,
                   drops_total=9, drops={"timeout": 1})  # fmt: skip
    families = parse([known])
    key = labels("game", "host-a", 400)
    assert families["cluster_memory_bytes"][2] == {key: 2.0 * 2**20}
    assert "cluster_port_sessions" not in families
    assert families["cluster_drops_total"][2] == {with_port(key, reason="timeout"): 1.0}
