"""The ``robustmq`` command line: ``robustmq serve`` runs the broker.

Flags win over the environment, which wins over the config file (see ``robustmq.config``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import resource
import signal
import sys
from typing import Any

from robustmq import __version__
from robustmq.config import ConfigError, Settings, load_settings

log = logging.getLogger("robustmq")

SHUTDOWN_GRACE_S = 5.0

# flag dest -> path in the settings tree
_FLAG_PATHS: dict[str, tuple[str, ...]] = {
    "host": ("host",),
    "data_dir": ("store", "data_dir"),
    "fsync": ("store", "fsync"),
    "log_level": ("log_level",),
    "nats_port": ("nats", "port"),
    "mqtt_port": ("mqtt", "port"),
    "mqtt_ws_port": ("mqtt", "ws_port"),
    "amqp_port": ("amqp", "port"),
    "kafka_port": ("kafka", "port"),
    "http_port": ("http", "port"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustmq", description="robustmq broker")
    parser.add_argument("--version", action="version", version=f"robustmq {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the broker")
    serve.add_argument("--config", help="TOML config file")
    serve.add_argument("--host", help="address every listener binds (default 127.0.0.1)")
    serve.add_argument("--data-dir", help="where the store keeps its files (default ./data)")
    serve.add_argument("--fsync", help="fsync policy: always | interval | never")
    serve.add_argument("--log-level", help="debug | info | warning | error")
    for proto, default in (
        ("nats", 4222),
        ("mqtt", 1883),
        ("mqtt-ws", "off"),
        ("amqp", 5672),
        ("kafka", 9092),
        ("http", 8080),
    ):
        serve.add_argument(
            f"--{proto}-port",
            help=f"{proto} listener port, 0 for any free port, 'off' to disable (default {default})",
        )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dest, path in _FLAG_PATHS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


async def _serve(settings: Settings) -> int:
    from robustmq.broker import Broker, BrokerStartError

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    broker = Broker(settings)
    try:
        await broker.start()
    except BrokerStartError as exc:
        print(f"robustmq: error: {exc}", file=sys.stderr, flush=True)
        await broker.stop()
        return 1
    # Everything built at start-up lives as long as the broker: keep it out of the collector's
    # scans so full collections stay short under load.
    gc.collect()
    gc.freeze()
    bound = " ".join(f"{name}={host}:{port}" for name, host, port in broker.bound_addresses())
    print(f"robustmq {__version__} ready {bound}", flush=True)
    await stop.wait()
    log.info("shutting down")
    try:
        await asyncio.wait_for(broker.stop(), SHUTDOWN_GRACE_S)
    except TimeoutError:
        log.warning("shutdown took longer than %.0f s; exiting anyway", SHUTDOWN_GRACE_S)
    return 0


def raise_open_files_limit() -> int:
    """Raise the soft descriptor limit to the hard one: every client is a descriptor. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the open files limit from %d to %d", soft, target)
    return soft


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"robustmq: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    raise_open_files_limit()
    import uvloop

    return uvloop.run(_serve(settings))
