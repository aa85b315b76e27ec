"""Limits and defaults of the MQTT front-end that are not user settings, with units in their names.

User-facing limits (port, max packet size, receive maximum, ...) are ``MqttSettings`` in robustmq.config.
"""

CLOSE_LINGER_S = 1.0  # after a DISCONNECT or refusing CONNACK we keep draining input this long
KEEPALIVE_GRACE_FACTOR = 1.5  # a client silent for 1.5 x keep alive is closed
SESSION_EXPIRY_NEVER = 0xFFFFFFFF
MAX_QUEUED_MESSAGES = 10_000  # per session, offline or behind its inflight window; beyond: dropped
BACKPRESSURE_QUEUE_MSGS = 2_000  # an online session this far behind pauses reading from the publisher
BACKPRESSURE_RESUME_MSGS = 500  # ... until its queue is down to this
BACKPRESSURE_MAX_HOLD_S = 0.5  # never hold a publisher longer (two clients may wait on each other)
V3_MAX_INFLIGHT_MESSAGES = 1024  # unacknowledged QoS 1/2 deliveries to a 3.1.1 client
WRITE_BUFFER_HIGH_BYTES = 4 * 1024 * 1024  # above this a connection takes no QoS 0 and no new inflight
WRITE_BUFFER_LOW_BYTES = 1024 * 1024
ASSIGNED_CLIENT_ID_PREFIX = "auto-"
LISTEN_BACKLOG = 1024
# Fairness: a connection that has used this much loop time on its input yields one loop tick
# (reads paused, resumed by the next tick), so one flooding client cannot keep the loop to itself.
WORK_BUDGET_S = 0.01
