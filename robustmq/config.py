"""One settings model for the whole broker.

Precedence, lowest first: built-in defaults < TOML file (``--config``) < environment
(``ROBUSTMQ_<SECTION>_<FIELD>``, e.g. ``ROBUSTMQ_NATS_PORT``) < command-line flags.
A bad value is reported as one line naming the setting (``ConfigError``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "ROBUSTMQ_"


class ConfigError(Exception):
    """A setting has a bad value; the message names the setting."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _port(value: Any) -> int | None:
    """A listener port: an integer 0-65535 (0 = any free port), or ``off``/None to disable it."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("off", "none", "disabled", ""):
            return None
        value = text
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("port must be between 0 and 65535, or 'off'")
    return port


class NatsSettings(_Section):
    port: int | None = 4222
    max_payload_bytes: int = Field(1024 * 1024, gt=0)
    max_control_line_bytes: int = Field(4096, gt=0)
    max_pending_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_connections: int = Field(65536, gt=0)
    max_subscriptions: int = Field(0, ge=0)  # per connection; 0 = unlimited
    ping_interval_s: float = Field(120.0, gt=0)
    max_pings_outstanding: int = Field(2, gt=0)
    # a client must send CONNECT within this time, with or without auth (as nats-server does)
    auth_timeout_s: float = Field(2.0, gt=0)
    # sockets that have not sent CONNECT yet, on this listener and from one remote address;
    # past either cap a new socket is closed at once
    max_unauthenticated_connections: int = Field(1024, gt=0)
    max_unauthenticated_per_address: int = Field(256, gt=0)
    server_name: str = ""

    _check_port = field_validator("port", mode="before")(lambda cls, v: _port(v))


class MqttSettings(_Section):
    port: int | None = 1883
    ws_port: int | None = None
    max_packet_bytes: int = Field(1024 * 1024, gt=0)
    max_connections: int = Field(65536, gt=0)
    receive_maximum: int = Field(1024, gt=0, le=65535)
    topic_alias_maximum: int = Field(64, ge=0, le=65535)
    max_keepalive_s: int = Field(65535, ge=0, le=65535)
    # a socket must finish the WebSocket upgrade (mqtt-ws) and send CONNECT within this time
    connect_timeout_s: float = Field(10.0, gt=0)
    # sockets still in their handshake, per listener (mqtt and mqtt-ws each) and per remote address
    max_unauthenticated_connections: int = Field(1024, gt=0)
    max_unauthenticated_per_address: int = Field(256, gt=0)

    _check_port = field_validator("port", "ws_port", mode="before")(lambda cls, v: _port(v))


class AmqpSettings(_Section):
    port: int | None = 5672
    frame_max_bytes: int = Field(131072, ge=4096)  # offered in Connection.Tune (RabbitMQ's default)
    channel_max: int = Field(2047, gt=0, le=65535)
    heartbeat_s: int = Field(60, ge=0, le=65535)  # offered in Connection.Tune; 0 = none
    max_message_bytes: int = Field(16 * 1024 * 1024, gt=0)  # larger publishes close the channel (406)
    # bodies waiting in all queues past which publishers are blocked (Connection.Blocked, reading
    # paused, as RabbitMQ's memory alarm) until they are back under 80% of it
    max_ready_bytes: int = Field(512 * 1024 * 1024, gt=0)
    max_connections: int = Field(65536, gt=0)
    # a socket must finish the handshake (protocol header to Connection.Open) within this time
    handshake_timeout_s: float = Field(10.0, gt=0)
    max_unauthenticated_connections: int = Field(1024, gt=0)
    max_unauthenticated_per_address: int = Field(256, gt=0)

    _check_port = field_validator("port", mode="before")(lambda cls, v: _port(v))


class KafkaSettings(_Section):
    port: int | None = 9092
    # what Metadata and FindCoordinator tell clients to connect to (default: the bound address)
    advertised_host: str | None = None
    advertised_port: int | None = Field(None, ge=1, le=65535)
    max_request_bytes: int = Field(100 * 1024 * 1024, gt=0)  # as Kafka's socket.request.max.bytes
    max_connections: int = Field(65536, gt=0)
    auto_create_topics: bool = True
    default_partitions: int = Field(1, ge=1, le=1024)  # of an auto-created topic
    # a connection must finish SASL within this time when users are configured
    auth_timeout_s: float = Field(10.0, gt=0)

    _check_port = field_validator("port", mode="before")(lambda cls, v: _port(v))


Role = Literal["admin", "user", "reader"]


class ApiToken(_Section):
    """A bearer token for the control plane (REST).

    With ``user`` it acts as that ``[auth]`` user (with the user's role, or ``reader`` when it says
    so); without one it is ``admin`` only when ``role = "admin"``, else a reader with no user.
    """

    token: str = Field(min_length=1)
    user: str | None = Field(None, min_length=1)
    role: Role | None = None


class HttpSettings(_Section):
    port: int | None = 8080
    max_request_bytes: int = Field(1024 * 1024, gt=0)
    # No tokens (and no auth.token / auth.users) = the control plane is open.
    tokens: list[ApiToken] = Field(default_factory=list)
    query_max_rows: int = Field(10_000, gt=0)
    query_timeout_ms: int = Field(5_000, gt=0)
    query_max_result_bytes: int = Field(4 * 1024 * 1024, gt=0)  # then truncated: true
    query_memory_limit_mb: int = Field(256, gt=0)  # per running query
    query_threads: int = Field(1, gt=0)  # DuckDB worker threads for the whole index
    query_concurrency: int = Field(2, gt=0)  # queries running at once
    query_queue: int = Field(2, ge=0)  # queries waiting for one of them; more get 429
    # a new connection must deliver a complete request head within this time
    request_head_timeout_s: float = Field(10.0, gt=0)
    keep_alive_timeout_s: float = Field(5.0, gt=0)  # an idle keep-alive connection is closed after it
    # connections that have not delivered a complete request head, in total and per remote address
    max_unauthenticated_connections: int = Field(1024, gt=0)
    max_unauthenticated_per_address: int = Field(256, gt=0)

    _check_port = field_validator("port", mode="before")(lambda cls, v: _port(v))


class StoreSettings(_Section):
    data_dir: Path = Path("./data")
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval_ms: int = Field(10, gt=0)
    commit_max_records: int = Field(1000, gt=0)
    commit_max_bytes: int = Field(256 * 1024, gt=0)
    segment_max_bytes: int = Field(64 * 1024 * 1024, gt=0)
    segment_max_age_s: float = Field(24 * 3600, gt=0)
    max_record_bytes: int = Field(8 * 1024 * 1024, gt=0)
    index_batch_rows: int = Field(20000, gt=0)
    index_flush_ms: int = Field(250, gt=0)
    index_spill_max_mb: int = Field(1024, gt=0)  # DuckDB's temp directory, beside the index file


class PermissionList(_Section):
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)


class Permissions(_Section):
    publish: PermissionList | None = None
    subscribe: PermissionList | None = None


class User(_Section):
    user: str
    password: str
    permissions: Permissions | None = None
    # Role on the control plane (REST): user = what the user may do over NATS, reader = the same
    # but GET only, admin = everything (never implied).
    role: Role = "user"


class AuthSettings(_Section):
    token: str | None = None
    users: list[User] = Field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.users)


class Mq9Settings(_Section):
    mailbox_default_ttl_s: int = Field(86400, ge=0)
    max_body_bytes: int = Field(1024 * 1024, gt=0)


class Settings(_Section):
    # loopback by default: binding anything else without credentials is logged as a warning
    host: str = "127.0.0.1"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    nats: NatsSettings = Field(default_factory=NatsSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    mq9: Mq9Settings = Field(default_factory=Mq9Settings)
    # Stream definitions from the file; the store validates them (see robustmq.store).
    streams: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tokens_name_users(self) -> Settings:
        """A token bound to a user must name an ``[auth]`` user and cannot widen its role."""
        users = {u.user: u for u in self.auth.users}
        for i, entry in enumerate(self.http.tokens):
            if entry.user is None:
                continue
            user = users.get(entry.user)
            if user is None:
                raise ValueError(f"http.tokens.{i}.user: no [auth] user named {entry.user!r}")
            if entry.role == "admin" and user.role != "admin":
                raise ValueError(f"http.tokens.{i}.role: admin, but user {entry.user!r} is not an admin")
        return self


_SECTIONS = ("nats", "mqtt", "amqp", "kafka", "http", "store", "auth", "mq9")


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``ROBUSTMQ_NATS_MAX_PAYLOAD_BYTES=2048`` -> ``{"nats": {"max_payload_bytes": "2048"}}``."""
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in _SECTIONS if key.startswith(s + "_")), None)
        if section is not None:
            _set_path(tree, (section, key[len(section) + 1 :]), value)
        elif key == "data_dir":
            _set_path(tree, ("store", "data_dir"), value)
        elif key in Settings.model_fields and key not in _SECTIONS:
            _set_path(tree, (key,), value)
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "settings"
    return f"invalid setting {where}: {first['msg']}"


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from file < environment < ``overrides`` (nested dict, e.g. from flags)."""
    tree: dict[str, Any] = {}
    if config_file is not None:
        try:
            tree = tomllib.loads(Path(config_file).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid config file {config_file}: {exc}") from None
    tree = _merge(tree, _env_overrides(os.environ if environ is None else environ))
    if overrides:
        tree = _merge(tree, overrides)
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
