"""Prometheus exposition of the samples (cluster.metrics), read back with prometheus_client's
own parser."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.metrics import CONTENT_TYPE, HELP, exposition, metric_name
from tests.test_screens import HW_A, HW_A_OLD, HW_B, cluster_samples, hw, sample, with_chat

Series = dict[tuple[tuple[str, str], ...], float]


def parse(samples: list[dict[str, Any]]) -> dict[str, tuple[str, str, Series]]:
    """name -> (type, help, {sorted labels: value}) of the exposition of `samples`."""
    text = exposition(samples).decode("utf-8")
    families = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in families, f"family {family.name} twice"
        series: Series = {}
        for point in family.samples:
            key = tuple(sorted(point.labels.items()))
            assert key not in series, f"duplicate series {point.name}{key}"
            series[key] = point.value
        families[family.name] = (family.type, family.documentation, series)
    return families


def labels(role: str, host: str, pid: int) -> tuple[tuple[str, str], ...]:
    ident = sample(role, host, pid)["id"]
    return (("host", host), ("process", ident), ("role", role))


@pytest.fixture
def families() -> dict[str, tuple[str, str, Series]]:
    return parse(cluster_samples())


def test_content_type_is_prometheus_text() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=")


def test_numeric_fields_become_labelled_gauges(families: dict[str, Any]) -> None:
    kind, help_text, series = families["cluster_login_success_tps"]
    assert kind == "gauge"
    assert help_text == HELP["login_success_tps"]
    assert series == {labels("auth", "host-a", 300): 9.0, labels("auth", "host-b", 301): 3.0}
    assert families["cluster_session_game"][2] == {
        labels("game", "host-a", 400): 65.0,
        labels("game", "host-b", 401): 80.0,
        labels("game", "host-b", 402): 60.0,
    }
    assert families["cluster_accept_total_login"][2][labels("gateway", "host-b", 201)] == 500.0
    assert families["cluster_routed_tps"][2] == {labels("broker", "host-a", 100): 24000.0}
    assert len(families["cluster_cpu_percent"][2]) == 9


CHAT_FIELDS = (
    "sessions", "session_auth", "session_login", "sectors_occupied", "sector_max", "message_tps",
    "delivery_tps", "cast_in_tps", "cast_out_tps", "update_tps", "recv_tps", "send_tps",
    "packet_pool", "pending_keys", "key_miss", "login_tps",
)  # fmt: skip
GATEWAY_CHAT_FIELDS = ("sessions_chat", "accept_total_chat", "accept_tps_chat")


def test_chat_workers_are_exported_with_help() -> None:
    families = parse(with_chat(cluster_samples()))
    chat_a, chat_b = labels("chat", "host-a", 700), labels("chat", "host-b", 701)
    for field in CHAT_FIELDS:
        kind, help_text, series = families[metric_name(field)]
        assert kind == "gauge"
        assert help_text == HELP[field]  # its own text, not the fallback for unknown fields
        assert chat_a in series and chat_b in series, field
    assert families["cluster_session_login"][2] == {chat_a: 24.0, chat_b: 15.0}
    assert families["cluster_message_tps"][2] == {chat_a: 150.0, chat_b: 90.0}
    assert families["cluster_key_miss"][2] == {chat_a: 1.0, chat_b: 2.0}
    assert families["cluster_cast_out_tps"][2] == {chat_a: 40.0, chat_b: 35.0}
    # a field both game and chat workers report: one family, both roles
    roles = {dict(key)["role"] for key in families["cluster_session_auth"][2]}
    assert roles == {"game", "chat"}
    assert "chat" in HELP["session_auth"].lower()
    drops = tuple(sorted((*chat_a, ("reason", "timeout"))))
    assert families["cluster_drops"][2][drops] == 2.0
    assert families["cluster_up"][2][chat_b] == 1.0


def test_gateway_chat_port_is_exported_with_help() -> None:
    families = parse(with_chat(cluster_samples()))
    gw_a, gw_b = labels("gateway", "host-a", 200), labels("gateway", "host-b", 201)
    for field in GATEWAY_CHAT_FIELDS:
        kind, help_text, series = families[metric_name(field)]
        assert kind == "gauge" and help_text == HELP[field] and "chat port" in help_text
        assert set(series) == {gw_a, gw_b}
    assert families["cluster_sessions_chat"][2] == {gw_a: 40.0, gw_b: 25.0}
    assert families["cluster_accept_total_chat"][2] == {gw_a: 77.0, gw_b: 33.0}
    assert families["cluster_accept_tps_chat"][2] == {gw_a: 2.0, gw_b: 1.0}


def test_time_pid_and_labels_are_not_gauges(families: dict[str, Any]) -> None:
    for name in ("cluster_time", "cluster_pid", "cluster_id", "cluster_role", "cluster_host"):
        assert name not in families
    assert not [name for name in families if name.startswith("cluster_hw")]


def test_drops_have_a_reason_label(families: dict[str, Any]) -> None:
    kind, help_text, series = families["cluster_drops"]
    assert kind == "gauge" and help_text
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


def test_host_figures_one_series_per_host_newest_wins() -> None:
    samples = cluster_samples()
    samples.insert(0, sample("broker", "host-a", 101, age=30.0, hw=HW_A_OLD))
    samples.append(sample("broker", "host-b", 102, age=60.0, hw=hw(1, 2, 3, 4, 5)))
    families = parse(samples)
    for field in ("cpu_total", "available_mb", "nonpaged_mb", "net_recv_kbps", "net_send_kbps"):
        kind, help_text, series = families[f"cluster_host_{field}"]
        assert kind == "gauge" and help_text
        assert series == {(("host", "host-a"),): HW_A[field], (("host", "host-b"),): HW_B[field]}


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
            "host_available_mb": 1,
            "sample_age_seconds": 9,
            "nested": {"a": 1},
            "none": None,
            "nan": float("nan"),
            "big": 10**20,
        },
        "not a sample",
    ]
    families = parse(odd)
    assert "cluster_name" not in families
    assert "cluster_flag" not in families
    assert "cluster_nested" not in families
    assert families["cluster_n"][2] == {(("host", "h"), ("process", "h/1"), ("role", "game")): 3.0}
    assert list(families["cluster_weird_field_name"][2].values()) == [1.5]
    assert list(families["cluster_2x"][2].values()) == [2.0]
    assert set(families["cluster_up"][2].values()) == {1.0}  # the field "up" does not count
    assert len(families["cluster_up"][2]) == 5
    assert families["cluster_host_available_mb"][2] == {(("host", "unknown"),): 10.0}
    assert "cluster_host_cpu_total" not in families and "cluster_host_odd" not in families
    assert "cluster_sample_age_seconds" not in families  # no sample has a numeric time
    quoted = labels_of(families["cluster_up"][2], 'q"uo\\te\nline')
    assert quoted == {"host": "unknown", "process": 'q"uo\\te\nline', "role": "7"}


def labels_of(series: Series, process: str) -> dict[str, str]:
    return next(dict(key) for key in series if dict(key)["process"] == process)


@pytest.mark.parametrize(
    ("field", "name"),
    [("cpu_percent", "cluster_cpu_percent"), ("a-b.c", "cluster_a_b_c"), ("é", "cluster__")],
)
def test_metric_name_is_sanitized(field: str, name: str) -> None:
    assert metric_name(field) == name
