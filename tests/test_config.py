"""Unit tests of cluster/config.py: ``load(path, env)`` defaults, overrides and ConfigError."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cluster.config import Config, ConfigError, describe, load


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, toml: str | None = None, env: dict[str, str] | None = None) -> str:
    path = None if toml is None else write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load(path, env or {})
    return str(info.value)


def load_error_env(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load(None, env)
    return str(info.value)


# --------------------------------------------------------------------------------- defaults


@pytest.fixture
def defaults() -> Config:
    return load(None, {})


def test_defaults_cluster(defaults: Config) -> None:
    assert defaults.cluster.link_mode == "systemlink"
    assert defaults.cluster.data_dir == "cluster-data"
    assert defaults.cluster.log_level == "info"
    assert defaults.source == ""


def test_defaults_gateway(defaults: Config) -> None:
    assert defaults.gateway.host == "127.0.0.1"
    assert defaults.gateway.game_port == 12211
    assert defaults.gateway.login_port == 8091
    assert defaults.gateway.heartbeat_timeout == 40
    assert isinstance(defaults.gateway.heartbeat_timeout, float)


def test_defaults_public_host_is_host(defaults: Config) -> None:
    assert defaults.gateway.public_host == defaults.gateway.host == "127.0.0.1"


def test_defaults_broker(defaults: Config) -> None:
    assert defaults.broker.bind == "tcp://127.0.0.1:5555"
    assert defaults.broker.endpoint == defaults.broker.bind
    assert defaults.broker.heartbeat_interval == 1.0
    assert defaults.broker.heartbeat_liveness == 3


def test_defaults_db_url_is_sqlite_under_data_dir(defaults: Config) -> None:
    assert defaults.db.url == f"sqlite:///{Path('cluster-data') / 'db'}"


def test_defaults_protocol_workers_game(defaults: Config) -> None:
    assert (defaults.protocol.code, defaults.protocol.key1, defaults.protocol.key2) == (
        119,
        50,
        132,
    )
    assert (defaults.workers.auth, defaults.workers.game) == (2, 2)
    assert defaults.game.verify_key is True
    assert defaults.game.version == 1


def test_config_is_frozen(defaults: Config) -> None:
    with pytest.raises(AttributeError):
        defaults.gateway.game_port = 1  # type: ignore[misc]


def test_describe_lists_every_key_with_its_default() -> None:
    rows = {key: (kind, default) for key, kind, default in describe()}
    assert rows["gateway.game_port"] == ("int", "12211")
    assert rows["cluster.link_mode"] == ("str", "'systemlink'")
    assert rows["game.verify_key"] == ("bool", "True")


# ----------------------------------------------------------------------- file and overrides


def test_file_overrides_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[cluster]
link_mode = "non-systemlink"
data_dir = "/srv/cluster"

[gateway]
host = "0.0.0.0"
game_port = 20000

[broker]
bind = "ipc:///tmp/broker.sock"

[workers]
auth = 0
game = 8

[protocol]
code = 7
""",
    )
    config = load(path, {})
    assert config.cluster.link_mode == "non-systemlink"
    assert config.gateway.host == "0.0.0.0"
    assert config.gateway.public_host == "0.0.0.0"
    assert config.gateway.game_port == 20000
    assert config.gateway.login_port == 8091  # untouched keys keep their default
    assert config.broker.endpoint == "ipc:///tmp/broker.sock"
    assert (config.workers.auth, config.workers.game) == (0, 8)
    assert config.protocol.code == 7
    assert config.db.url == f"sqlite:///{Path('/srv/cluster') / 'db'}"
    assert config.source == str(path)


def test_explicit_derived_values_are_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[gateway]
public_host = "game.example"
[broker]
endpoint = "tcp://10.0.0.1:5555"
[db]
url = "mysql://u:p@db:3306"
""",
    )
    config = load(path, {})
    assert config.gateway.public_host == "game.example"
    assert config.broker.endpoint == "tcp://10.0.0.1:5555"
    assert config.db.url == "mysql://u:p@db:3306"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert load(path, {}) == dataclasses.replace(load(None, {}), source=str(path))


def test_int_for_float_key_is_accepted_as_float(tmp_path: Path) -> None:
    config = load(write(tmp_path, "[gateway]\nheartbeat_timeout = 0\n"), {})
    assert config.gateway.heartbeat_timeout == 0.0
    assert isinstance(config.gateway.heartbeat_timeout, float)


def test_env_override_wins_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[gateway]\ngame_port = 20000\n")
    config = load(path, {"CLUSTER_GATEWAY_GAME_PORT": "13000"})
    assert config.gateway.game_port == 13000


def test_env_override_without_file() -> None:
    config = load(None, {"CLUSTER_BROKER_HEARTBEAT_INTERVAL": "0.5", "CLUSTER_DB_URL": "mysql://x"})
    assert config.broker.heartbeat_interval == 0.5
    assert config.db.url == "mysql://x"


def test_env_key_is_case_insensitive_after_prefix() -> None:
    assert load(None, {"CLUSTER_gateway_game_port": "13000"}).gateway.game_port == 13000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("false", False),
        ("0", False),
        ("no", False),
        ("off", False),
        (" FALSE ", False),
        ("true", True),
        ("1", True),
        ("yes", True),
        ("On", True),
    ],
)
def test_env_bool_parsing(text: str, expected: bool) -> None:
    assert load(None, {"CLUSTER_GAME_VERIFY_KEY": text}).game.verify_key is expected


def test_env_unknown_section_is_ignored() -> None:
    env = {"CLUSTER_FOO": "1", "CLUSTER_FOO_BAR": "x", "CLUSTER_": "y", "OTHER_GATEWAY_X": "z"}
    assert load(None, env) == load(None, {})


def test_env_game_section_is_not_confused_with_gateway() -> None:
    config = load(None, {"CLUSTER_GAME_VERSION": "5", "CLUSTER_GATEWAY_GAME_PORT": "13000"})
    assert config.game.version == 5
    assert config.gateway.game_port == 13000


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTER_GATEWAY_LOGIN_PORT", "9000")
    assert load(None).gateway.login_port == 9000


def test_env_value_is_still_range_checked() -> None:
    assert "gateway.game_port" in load_error_env({"CLUSTER_GATEWAY_GAME_PORT": "70000"})


# ---------------------------------------------------------------------------------- errors


def test_unknown_section_names_the_section(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[gatewya]\ngame_port = 1\n")
    assert "gatewya" in message
    assert "unknown section" in message


def test_section_that_is_not_a_table_names_the_section(tmp_path: Path) -> None:
    assert "gateway" in load_error(tmp_path, "gateway = 1\n")


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[gateway]\ngame_prot = 1\n")
    assert "gateway.game_prot" in message
    assert "unknown key" in message


def test_string_for_int_names_the_key(tmp_path: Path) -> None:
    assert "gateway.game_port" in load_error(tmp_path, '[gateway]\ngame_port = "12211"\n')


def test_bool_for_int_names_the_key(tmp_path: Path) -> None:
    assert "workers.auth" in load_error(tmp_path, "[workers]\nauth = true\n")


def test_int_for_bool_names_the_key(tmp_path: Path) -> None:
    assert "game.verify_key" in load_error(tmp_path, "[game]\nverify_key = 1\n")


def test_float_for_int_names_the_key(tmp_path: Path) -> None:
    assert "protocol.code" in load_error(tmp_path, "[protocol]\ncode = 119.0\n")


def test_bool_for_float_names_the_key(tmp_path: Path) -> None:
    assert "gateway.heartbeat_timeout" in load_error(
        tmp_path, "[gateway]\nheartbeat_timeout = true\n"
    )


def test_int_for_str_names_the_key(tmp_path: Path) -> None:
    assert "gateway.host" in load_error(tmp_path, "[gateway]\nhost = 1\n")


@pytest.mark.parametrize("port", [0, 70000, -1, 65536])
def test_port_out_of_range_names_the_key(tmp_path: Path, port: int) -> None:
    message = load_error(tmp_path, f"[gateway]\nlogin_port = {port}\n")
    assert "gateway.login_port" in message
    assert "out of range" in message


@pytest.mark.parametrize("port", [1, 65535])
def test_port_at_the_bounds_is_accepted(tmp_path: Path, port: int) -> None:
    assert load(write(tmp_path, f"[gateway]\nlogin_port = {port}\n"), {}).gateway.login_port == port


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("protocol", "code", 256),
        ("protocol", "key2", -1),
        ("broker", "heartbeat_interval", 0.01),
        ("broker", "heartbeat_liveness", 0),
        ("gateway", "heartbeat_timeout", -1),
        ("workers", "game", 257),
    ],
)
def test_ranged_value_out_of_range_names_the_key(
    tmp_path: Path, section: str, key: str, value: float
) -> None:
    assert f"{section}.{key}" in load_error(tmp_path, f"[{section}]\n{key} = {value}\n")


def test_bad_link_mode_names_the_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[cluster]\nlink_mode = "systemLink"\n')
    assert "cluster.link_mode" in message
    assert "non-systemlink" in message  # lists the allowed values


def test_bad_link_mode_from_env_names_the_key() -> None:
    assert "cluster.link_mode" in load_error_env({"CLUSTER_CLUSTER_LINK_MODE": "bogus"})


@pytest.mark.parametrize("text", ["abc", "1.5", "", "12211x"])
def test_env_non_number_for_int_names_the_key(text: str) -> None:
    message = load_error_env({"CLUSTER_GATEWAY_GAME_PORT": text})
    assert "gateway.game_port" in message
    assert "environment" in message


def test_env_non_number_for_float_names_the_key() -> None:
    assert "broker.heartbeat_interval" in load_error_env(
        {"CLUSTER_BROKER_HEARTBEAT_INTERVAL": "fast"}
    )


def test_env_bad_bool_names_the_key() -> None:
    assert "game.verify_key" in load_error_env({"CLUSTER_GAME_VERIFY_KEY": "maybe"})


def test_env_unknown_key_in_known_section_names_the_key() -> None:
    message = load_error_env({"CLUSTER_GATEWAY_GAME_PROT": "1"})
    assert "gateway.game_prot" in message
    assert "CLUSTER_GATEWAY_GAME_PROT" in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[gateway\ngame_port = \n")
    assert "invalid TOML" in message
    assert "cluster.toml" in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(missing, {})
    assert str(missing) in str(info.value)


def test_directory_as_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load(tmp_path, {})


def test_game_port_equal_to_login_port_names_the_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[gateway]\ngame_port = 8091\n")
    assert "gateway.game_port" in message


def test_game_port_equal_to_login_port_via_env_names_the_key() -> None:
    assert "gateway.game_port" in load_error_env({"CLUSTER_GATEWAY_LOGIN_PORT": "12211"})


@pytest.mark.parametrize("bind", ["127.0.0.1:5555", "udp://127.0.0.1:5555", "inproc://x"])
def test_broker_bind_without_tcp_or_ipc_names_the_key(tmp_path: Path, bind: str) -> None:
    assert "broker.bind" in load_error(tmp_path, f'[broker]\nbind = "{bind}"\n')


def test_empty_broker_bind_names_the_key(tmp_path: Path) -> None:
    assert "broker.bind" in load_error(tmp_path, '[broker]\nbind = ""\n')


def test_broker_endpoint_without_tcp_or_ipc_names_the_key(tmp_path: Path) -> None:
    assert "broker.endpoint" in load_error(tmp_path, '[broker]\nendpoint = "localhost:5555"\n')


@pytest.mark.parametrize("url", ["postgres://u@h/db", "sqlite://relative", "mysql:/x"])
def test_db_url_with_unsupported_scheme_names_the_key(tmp_path: Path, url: str) -> None:
    assert "db.url" in load_error(tmp_path, f'[db]\nurl = "{url}"\n')


def test_empty_gateway_host_names_the_key(tmp_path: Path) -> None:
    assert "gateway.host" in load_error(tmp_path, '[gateway]\nhost = ""\n')


@pytest.mark.parametrize("source", ["env", "toml"], ids=["env-nan", "toml-nan"])
def test_nan_for_ranged_float_names_the_key(tmp_path: Path, source: str) -> None:
    if source == "env":
        message = load_error_env({"CLUSTER_BROKER_HEARTBEAT_INTERVAL": "nan"})
    else:
        message = load_error(tmp_path, "[broker]\nheartbeat_interval = nan\n")
    assert "broker.heartbeat_interval" in message


def test_a_public_host_longer_than_res_login_holds_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"gateway.public_host: .* 16 UTF-16 units"):
        load(None, {"CLUSTER_GATEWAY_PUBLIC_HOST": "game.server.example.com"})
    assert load(None, {"CLUSTER_GATEWAY_PUBLIC_HOST": "203.113.100.200"}).gateway.public_host


def test_type_errors_name_the_kind_of_value_in_words() -> None:
    wanted = r"gateway.game_port: 'x' \(from environment\) is not an integer$"
    with pytest.raises(ConfigError, match=wanted):
        load(None, {"CLUSTER_GATEWAY_GAME_PORT": "x"})


def test_a_monitor_tool_key_of_31_characters_is_refused_at_load(tmp_path: Path) -> None:
    message = load_error(tmp_path, f'[monitor]\ntool_key = "{"k" * 31}"\n')
    assert message.startswith("monitor.tool_key: must be 32 ASCII characters")
    assert message.endswith("got 31")
    assert load(None, {"CLUSTER_MONITOR_TOOL_KEY": "k" * 32}).monitor.tool_key == "k" * 32
