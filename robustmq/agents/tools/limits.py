"""Limits and defaults of the tool registry, in one place (units in the names).

Liveness (heartbeat intervals, missed beats) follows the agent API's limits.
"""

from __future__ import annotations

DEFAULT_TOOL_CONCURRENCY = 10  # tools are usually stateless functions: several calls at once
MAX_SCHEMA_ERRORS = 20  # ``details`` of a 400 lists at most this many violations
TOOL_STREAM = "$mq9.AI.API.tools"  # compacted by tool name: the newest registration of each tool
DEFAULT_DISCOVER_LIMIT = 20
