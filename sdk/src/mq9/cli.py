"""The ``mq9`` command: ``mq9 run module:agent`` runs an agent from the shell until SIGINT/SIGTERM.

``module:attr`` names an ``Agent`` or a function returning one; ``--servers`` overrides its URL.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from mq9.agent import Agent
from mq9.errors import Mq9Error
from mq9.logs import configure


def load_agent(target: str) -> Agent:
    """``package.module:name`` -> the Agent it names (calling it if it is a factory)."""
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise SystemExit(f"mq9: {target!r} is not module:agent")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    if attr:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    else:
        found = [v for v in vars(module).values() if isinstance(v, Agent)]
        if len(found) != 1:
            raise SystemExit(f"mq9: {module_name} has {len(found)} agents; name one as {module_name}:<name>")
        obj = found[0]
    if callable(obj) and not isinstance(obj, Agent):
        obj = obj()
    if not isinstance(obj, Agent):
        raise SystemExit(f"mq9: {target} is not an mq9.Agent")
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mq9", description="Run mq9 agents.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an agent until SIGINT or SIGTERM")
    run.add_argument("target", help="module:agent, e.g. examples.translator:agent")
    run.add_argument("--servers", help="NATS URL(s) of the broker, comma-separated (overrides the agent's)")
    run.add_argument("--log-level", default=os.environ.get("MQ9_LOG_LEVEL", "INFO"))
    run.add_argument(
        "--log-format", choices=("text", "json"), default=os.environ.get("MQ9_LOG_FORMAT", "text")
    )
    args = parser.parse_args(argv)
    configure(args.log_level, args.log_format)
    agent = load_agent(args.target)
    if args.servers:
        agent.client.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    try:
        agent.run()
    except (Mq9Error, OSError) as exc:  # could not connect or register: say so in one line
        print(f"mq9: agent {agent.name} could not start: {exc}", file=sys.stderr)
        return 1
    return 0
