"""NATS micro discovery (``$SRV.PING | INFO | STATS [.name [.id]]``) for registered agents.

Each live instance answers as one micro service instance: the agent's name and card version, its
skills as endpoints, its counters as endpoint stats. Pure functions from records to reply bodies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from robustmq.agents.api.instances import Instance

SRV_PREFIX = "$SRV."
SRV_SUBJECT = "$SRV.>"
VERBS = ("PING", "INFO", "STATS")
PING_TYPE = "io.nats.micro.v1.ping_response"
INFO_TYPE = "io.nats.micro.v1.info_response"
STATS_TYPE = "io.nats.micro.v1.stats_response"
INVOKE_SUBJECT = "$mq9.AI.API.AGENT.INVOKE.{name}"
ENDPOINT_QUEUE_GROUP = "q"
DEFAULT_ENDPOINT = "default"
DEFAULT_VERSION = "0.0.0"


class SrvRequest(NamedTuple):
    verb: str
    name: str | None
    instance_id: str | None


def parse_srv_subject(subject: str) -> SrvRequest | None:
    """``$SRV.INFO.translator`` -> ``SrvRequest("INFO", "translator", None)``; None if not micro."""
    tokens = subject.split(".")
    if len(tokens) < 2 or len(tokens) > 4 or tokens[0] != "$SRV" or tokens[1] not in VERBS:
        return None
    name = tokens[2] if len(tokens) > 2 else None
    instance_id = tokens[3] if len(tokens) > 3 else None
    return SrvRequest(tokens[1], name, instance_id)


def _identity(inst: Instance, card: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": inst.agent,
        "id": inst.instance_id,
        "version": card.get("version") or DEFAULT_VERSION,
        "metadata": {str(k): v if isinstance(v, str) else str(v) for k, v in metadata.items()},
    }


def _skill_ids(card: dict[str, Any]) -> list[str]:
    ids = [s.get("id") for s in card.get("skills") or () if isinstance(s, dict) and s.get("id")]
    return ids or [DEFAULT_ENDPOINT]


def ping(inst: Instance, card: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    return {"type": PING_TYPE, **_identity(inst, card, metadata)}


def info(inst: Instance, card: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    subject = INVOKE_SUBJECT.format(name=inst.agent)
    endpoints = [
        {"name": sid, "subject": subject, "queue_group": ENDPOINT_QUEUE_GROUP, "metadata": {"skill": sid}}
        for sid in _skill_ids(card)
    ]
    return {
        "type": INFO_TYPE,
        **_identity(inst, card, metadata),
        "description": card.get("description") or "",
        "endpoints": endpoints,
    }


def stats(inst: Instance, card: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    subject = INVOKE_SUBJECT.format(name=inst.agent)
    endpoints = []
    names = _skill_ids(card)
    names += [n for n in inst.endpoint_stats if n not in names]
    for sid in names:
        requests, errors_, processing_ns, last_error = inst.endpoint_stats.get(sid, (0, 0, 0, ""))
        endpoints.append(
            {
                "name": sid,
                "subject": subject,
                "queue_group": ENDPOINT_QUEUE_GROUP,
                "num_requests": requests,
                "num_errors": errors_,
                "last_error": last_error,
                "processing_time": processing_ns,
                "average_processing_time": processing_ns // requests if requests else 0,
                "data": {"in_flight": inst.in_flight, "max_concurrency": inst.max_concurrency},
            }
        )
    started = datetime.fromtimestamp(inst.registered_ms / 1000, UTC)
    return {
        "type": STATS_TYPE,
        **_identity(inst, card, metadata),
        "started": started.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "endpoints": endpoints,
    }


BUILDERS = {"PING": ping, "INFO": info, "STATS": stats}
