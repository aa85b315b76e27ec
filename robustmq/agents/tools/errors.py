"""Error texts of the tool registry and tool calls, in one place.

Codes are the agent API's (``robustmq.agents.api.errors``); a failure reply may add ``details``.
"""

from __future__ import annotations

UNKNOWN_TOOL = "tool {name} not found"
UNKNOWN_INSTANCE = "instance {instance_id} of tool {name} not found"
INSTANCE_DOWN = "instance {instance_id} of tool {name} is down; register again"
TOOL_NAME_TAKEN = "tool {name} belongs to another user"
NOT_AUTHORIZED = "not authorized for tool {name}"
NOT_STORABLE = "invalid request: tool {name} cannot be stored as JSON: {reason}"
BAD_SCHEMA = "invalid request: {field} is not a valid JSON Schema"
BAD_ARGUMENTS = "arguments do not match the input_schema of tool {name}"
BAD_RESULT = "tool result does not match its output_schema: {detail}"
NO_LIVE = "no live instance of tool {name}"
TOOL_ERROR = "tool error: {detail}"
