"""Settings precedence and validation: file < environment < flags, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustmq.config import ConfigError, load_settings


def test_defaults_are_embedded() -> None:
    s = load_settings(environ={})
    assert s.nats.port == 4222
    assert s.mqtt.port == 1883
    assert s.http.port == 8080
    assert s.mqtt.ws_port is None
    assert s.store.data_dir == Path("./data")
    assert s.store.fsync == "interval"


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "robustmq.toml"
    cfg.write_text('host = "127.0.0.1"\n[nats]\nport = 5000\nmax_payload_bytes = 2048\n[mqtt]\nport = 6000\n')
    s = load_settings(cfg, environ={})
    assert (s.host, s.nats.port, s.mqtt.port, s.nats.max_payload_bytes) == ("127.0.0.1", 5000, 6000, 2048)
    s = load_settings(cfg, environ={"ROBUSTMQ_NATS_PORT": "5001", "ROBUSTMQ_DATA_DIR": "/x"})
    assert s.nats.port == 5001
    assert s.store.data_dir == Path("/x")
    s = load_settings(cfg, environ={"ROBUSTMQ_NATS_PORT": "5001"}, overrides={"nats": {"port": "5002"}})
    assert s.nats.port == 5002
    assert s.nats.max_payload_bytes == 2048


def test_port_off_disables_a_listener() -> None:
    s = load_settings(environ={"ROBUSTMQ_MQTT_PORT": "off"}, overrides={"http": {"port": "off"}})
    assert s.mqtt.port is None
    assert s.http.port is None


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"nats": {"port": "70000"}}, "nats.port"),
        ({"nats": {"port": "abc"}}, "nats.port"),
        ({"store": {"fsync": "sometimes"}}, "store.fsync"),
        ({"nats": {"max_payload_bytes": "-1"}}, "nats.max_payload_bytes"),
    ],
)
def test_bad_value_is_one_line_naming_the_setting(overrides: dict, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, overrides=overrides)
    message = str(info.value)
    assert setting in message
    assert "\n" not in message


def test_unknown_setting_in_file_is_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[nats]\nprot = 1\n")
    with pytest.raises(ConfigError, match="nats.prot"):
        load_settings(cfg, environ={})


def test_unreadable_or_malformed_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[nats\n")
    with pytest.raises(ConfigError, match="invalid config file"):
        load_settings(bad, environ={})
