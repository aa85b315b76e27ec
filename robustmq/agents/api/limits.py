"""Limits and defaults of the agent API, in one place (units in the names).

The contract's defaults (issue 5) live here so the schemas, the service and the docs agree.
"""

from __future__ import annotations

MAX_AGENT_NAME_CHARS = 128
MAX_CONCURRENCY = 10_000
DEFAULT_HEARTBEAT_INTERVAL_MS = 5000
MIN_HEARTBEAT_INTERVAL_MS = 50
MAX_HEARTBEAT_INTERVAL_MS = 3_600_000
MISSED_HEARTBEATS_DOWN = 3  # an instance missing this many intervals is down
LIVENESS_SWEEP_MS = 50  # how often due liveness deadlines are looked at (only the due ones)
DEADLINES_COMPACT_MIN = 1024  # superseded liveness entries are dropped once the heap passes 2x live
HOUSEKEEPING_EVERY_SWEEPS = 200  # expired idempotency keys are dropped this often (10 s)
DOWN_INSTANCE_KEEP_MS = 60_000  # a down instance stays visible in INFO/STATUS this long

DEFAULT_LIST_LIMIT = 100
DEFAULT_DISCOVER_LIMIT = 20
MAX_LIST_LIMIT = 1000

# INVOKE by intent: semantic scores (cosine plus a keyword share) below this mean "no match"
MIN_INTENT_SEMANTIC_SCORE = 0.2

DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000
MAX_RETRIES = 10
MAX_IDEMPOTENCY_KEY_CHARS = 256
IDEMPOTENCY_WINDOW_MS = 10 * 60 * 1000

MAX_TASKS_IN_MEMORY = 50_000  # finished tasks beyond this are forgotten, oldest first
MAX_EVENTS_PER_TASK = 10_000
MAX_EVENTS_PER_REPLY = 1000
LATENCY_WINDOW = 1024  # recent latencies kept per agent for avg/p99

# task records are appended to the store at most this often (or when this many are waiting): each
# append leads to a commit and, under fsync "interval", to a sync; a process crash loses at most
# the records of the last interval (a power loss also the store's own fsync window)
JOURNAL_FLUSH_MS = 50
JOURNAL_FLUSH_MAX_RECORDS = 2000

TASK_STREAM = "$mq9.AI.API.tasks"  # the store stream holding tasks, events and registrations
