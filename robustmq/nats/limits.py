"""Every protocol constant and default of the NATS front-end, in one place.

Configurable limits live in ``robustmq.config.NatsSettings``; these are the fixed ones.
"""

from __future__ import annotations

# What INFO advertises. nats-py reads ``version`` as semver for feature checks, so we report
# the nats-server release whose wire behaviour we follow.
COMPAT_SERVER_VERSION = "2.15.1"
PROTOCOL_VERSION = 1
GO_FIELD = "python"

# nats-server's MAX_CONTROL_LINE_SIZE: the longest operation line (without payload).
DEFAULT_MAX_CONTROL_LINE_BYTES = 4096
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024

# How often the idle sweep runs, at most: PINGs and authentication timeouts are checked by it.
SWEEP_INTERVAL_MAX_S = 1.0
# A stopping server gives its connections this long to drain their write buffers.
STOP_DRAIN_S = 1.0

# Back-pressure: a connection whose write buffer passes this (or a quarter of max_pending_bytes,
# whichever is smaller) stalls the publishers feeding it for at most STALL_MAX_S per read.
STALL_HIGH_WATER_MAX_BYTES = 4 * 1024 * 1024
STALL_MAX_S = 0.01

# A failing in-process subscriber is logged at most this often (it is counted every time).
DELIVERY_ERROR_LOG_INTERVAL_S = 10.0

# Fairness: a connection that has used this much loop time on its input yields one loop iteration
# (its reads are paused and resumed by the next tick), so one flooding client cannot keep the loop
# to itself (libuv reads a readable socket up to 32 times in a row, uvloop up to 250 kB each).
# Time rather than bytes: a fast publisher seldom yields, a costly one (+OK per frame, fan-out) soon.
WORK_BUDGET_S = 0.01
# SUB and UNSUB frames handled in one slice; the rest of a flood waits for the next loop tick.
SUB_SLICE_FRAMES = 500
