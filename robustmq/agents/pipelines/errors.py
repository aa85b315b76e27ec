"""Error texts of the pipeline API, in one place.

Codes are the agent API's (``robustmq.agents.api.errors``); a 400 from CREATE adds ``details``.
"""

from __future__ import annotations

INVALID_PIPELINE = "invalid pipeline: {count} problem(s), see details"
NOT_STORABLE = "invalid pipeline: it cannot be stored as JSON: {reason}"
PIPELINE_EXISTS = 'pipeline {name} already exists (send "replace": true to redefine it)'
UNKNOWN_PIPELINE = "pipeline {name} not found"
UNKNOWN_RUN = "run {run_id} not found"
RUN_FINISHED = "run {run_id} is already {state}"
STEP_FAILED = "step {step}: {text}"
RUN_CANCELED = "run canceled"
RUN_DEADLINE = "deadline exceeded"
UNKNOWN_AGENT = "agent {name} not found"
NO_AGENT_FOR_INTENT = "no live agent matches the intent"
NOT_A_LIST = "for_each {reference} is not a list"
BROKER_RESTARTED = "the run's deadline passed while the broker was down"
NOT_AUTHORIZED = "not authorized for run {run_id}"
