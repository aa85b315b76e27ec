"""Every limit and default of the control plane in one place.

Limits a deployment tunes (request size, query rows and time) live in ``HttpSettings``; these are fixed.
"""

PAGE_LIMIT_DEFAULT = 100
PAGE_LIMIT_MAX = 1000
CURSOR_MAX_CHARS = 512
SHUTDOWN_GRACE_S = 2.0
LISTEN_BACKLOG = 1024
SSE_KEEPALIVE_S = 15.0
MAILBOX_SCAN_MAX_RECORDS = 100_000  # depth per priority is counted up to this many messages
STREAM_MAX_DURATION_S = 100 * 365 * 86400  # max_age_s / default_ttl_s beyond a century are refused
