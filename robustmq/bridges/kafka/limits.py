"""Every Kafka-side limit and default in one place (units in the names).

Settings a user may change live in ``robustmq.config.KafkaSettings``; these are the fixed ones.
"""

from __future__ import annotations

NODE_ID = 0  # this broker is the whole cluster: leader, controller and coordinator
CLUSTER_ID = "robustmq-kafka-cluster"
MAX_TOPIC_NAME_CHARS = 249  # as Kafka
MAX_FETCH_WAIT_MS = 30_000  # a longer max_wait_ms is capped here
FETCH_READ_CHUNK_RECORDS = 500  # records read from the store per step while filling a fetch
PRODUCER_STATE_MAX_IDS = 100_000  # idempotent producers remembered (oldest forgotten first)
PRODUCER_DEDUP_BATCHES = 5  # last batches kept per producer and partition (as Kafka)
GROUP_MIN_SESSION_TIMEOUT_MS = 1_000
GROUP_MAX_SESSION_TIMEOUT_MS = 300_000
GROUP_INITIAL_REBALANCE_DELAY_MS = 300  # an empty group waits this long for more first members
MAX_GROUPS = 10_000
MAX_MEMBERS_PER_GROUP = 1_000
SCRAM_ITERATIONS = 4096
OFFSETS_CONSUMER_PREFIX = "kafka."  # store consumer name of a group's committed offsets

# The API versions of Apache Kafka 3.0.0 for the APIs served here (kafka-python infers the release
# from this table and gates features on it; librdkafka picks versions from it). Produce starts at 3
# and Fetch at 4: record batches v2 only, no MessageSet v0/v1.
API_VERSIONS: dict[int, tuple[int, int]] = {
    0: (3, 9),  # Produce
    1: (4, 12),  # Fetch
    2: (0, 7),  # ListOffsets
    3: (0, 11),  # Metadata (v10+: topic ids)
    8: (0, 8),  # OffsetCommit
    9: (0, 8),  # OffsetFetch
    10: (0, 4),  # FindCoordinator (v4: batched keys)
    11: (0, 7),  # JoinGroup
    12: (0, 4),  # Heartbeat
    13: (0, 4),  # LeaveGroup
    14: (0, 5),  # SyncGroup
    15: (0, 5),  # DescribeGroups
    16: (0, 4),  # ListGroups
    17: (1, 1),  # SaslHandshake (v1 only: tokens travel in SaslAuthenticate)
    18: (0, 3),  # ApiVersions
    19: (0, 7),  # CreateTopics
    20: (0, 6),  # DeleteTopics
    22: (0, 4),  # InitProducerId
    32: (0, 4),  # DescribeConfigs
    36: (0, 2),  # SaslAuthenticate
    37: (0, 3),  # CreatePartitions
    42: (0, 2),  # DeleteGroups
    60: (0, 0),  # DescribeCluster
}

MAX_QUEUED_REQUESTS = 64  # decoded requests waiting per connection before reading pauses
WRITE_BUFFER_HIGH_BYTES = 4 * 1024 * 1024  # pending output per connection before requests wait
WRITE_BUFFER_LOW_BYTES = 1024 * 1024
LISTEN_BACKLOG = 1024
