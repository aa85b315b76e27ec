"""Defaults and limits of the SDK, with their units, in one place.

Wire defaults (FETCH batch size, heartbeat interval, invocation timeout) follow the broker's.
"""

from __future__ import annotations

DEFAULT_SERVERS = "nats://127.0.0.1:4222"
REQUEST_TIMEOUT_S = 5.0
# a sync call waits this much longer than its own deadline so the broker's 408 arrives first
DEADLINE_GRACE_S = 2.0
INVOKE_TIMEOUT_S = 30.0
RECONNECT_WAIT_S = 0.5
CONNECT_TIMEOUT_S = 2.0
# tries of the first connection before Client.connect() gives up (reconnections retry for ever)
CONNECT_ATTEMPTS = 3

HEARTBEAT_INTERVAL_S = 5.0
MAX_CONCURRENCY = 1
# a skill still running this long after its task was cancelled is cancelled by asyncio
CANCEL_GRACE_S = 2.0
# stop() waits this long for invocations and mailbox messages in flight
DRAIN_TIMEOUT_S = 30.0

FETCH_BATCH = 10
FETCH_MAX_BATCH = 1000
FETCH_WAIT_MS = 1000
# a mailbox message whose handler raised this many times is dropped (and logged)
MAX_DELIVERY_ATTEMPTS = 5
REDELIVERY_BACKOFF_S = 0.2
RETRY_AFTER_ERROR_S = 0.5

# Task.result() re-reads the task at least this often while it waits for updates
TASK_POLL_S = 1.0
TERMINAL_STATES = frozenset({"completed", "failed", "canceled", "rejected"})

PRIORITIES = ("critical", "urgent", "normal")
CONTENT_TYPE_JSON = "application/json"
