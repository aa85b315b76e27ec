"""Every fixed number of the AMQP front-end in one place (the configurable ones live in ``robustmq.config``)."""

from __future__ import annotations

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_HEADER_BYTES = 7
FRAME_END = 0xCE
FRAME_OVERHEAD_BYTES = 8  # header plus frame-end byte
MIN_FRAME_MAX_BYTES = 4096  # the spec's floor for frame_max
SERVER_NAMED_QUEUE_PREFIX = "amq.gen-"
MAX_SHORTSTR_BYTES = 255
LISTEN_BACKLOG = 1024
WRITE_BUFFER_HIGH_BYTES = 1024 * 1024  # past this a connection's consumers stop being fed
WRITE_BUFFER_LOW_BYTES = 256 * 1024
CLOSE_OK_WAIT_S = 1.0  # after sending Connection.Close, wait this long for CloseOk
HEARTBEAT_MISSES = 2  # a peer silent for this many heartbeat intervals is closed
DISPATCH_BATCH_MESSAGES = 2048  # a queue hands out at most this many messages per turn
TICK_OUT_MAX_BYTES = (
    4 * 1024 * 1024
)  # queued in one tick past this, a connection's consumers wait for the flush
DEFAULT_VHOST = "/"
PRODUCT = "robustmq"
NEVER_MS = 2**62  # an ack wait that never runs out (AMQP has no per-message ack deadline)
WORK_BUDGET_S = 0.01  # loop time one connection may take before it yields a tick to the others
UNBLOCK_FRACTION = 0.8  # publishers blocked at max_ready_bytes are let go below this share of it
BLOCKED_REASON = "low on memory"
