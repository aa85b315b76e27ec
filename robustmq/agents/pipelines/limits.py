"""Limits and defaults of pipelines, in one place (units in the names).

Step tasks use the agent API's limits (timeouts, retries) as well.
"""

from __future__ import annotations

MAX_STEPS = 256
MAX_FOR_EACH_ITEMS = 10_000
MAX_STEP_ID_CHARS = 64
DEFAULT_RUN_TIMEOUT_MS = 300_000
MAX_RUN_TIMEOUT_MS = 7 * 24 * 3600 * 1000
MAX_STEP_RETRIES = 10
MAX_RUNS_IN_MEMORY = 10_000  # finished runs beyond this are forgotten, oldest first
MAX_INTENT_CANDIDATES = 5

PIPELINE_STREAM = "$mq9.AI.API.pipelines"  # definitions, compacted by name
RUN_STREAM = "$mq9.AI.API.pipeline-runs"  # run checkpoints
RUN_RETENTION_S = 7 * 24 * 3600.0
