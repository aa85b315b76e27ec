"""The message store: streams on a checksummed segment log, DuckDB as index and query engine.

Public API: ``Store`` (a broker component, ``broker.store``), ``StreamConfig``, ``Record``,
``Consumer`` / ``ConsumerConfig``, the acks ``append`` returns, the clocks, and the errors.
"""

from robustmq.store.committer import Ack, BatchAck
from robustmq.store.consumers import Consumer, ConsumerConfig
from robustmq.store.errors import (
    ConsumerNotFound,
    CorruptRecordError,
    InvalidStreamConfig,
    QueryBusy,
    QueryError,
    QueryTimeout,
    QueryTooLarge,
    RecordTooLarge,
    StoreClosed,
    StoreError,
    StoreOpenError,
    StoreWriteError,
    StreamExists,
    StreamNotFound,
)
from robustmq.store.records import PRIORITIES, Record
from robustmq.store.store import Store
from robustmq.store.stream import StreamConfig, StreamInfo
from robustmq.store.timers import Clock, ManualClock

__all__ = [
    "PRIORITIES",
    "Ack",
    "BatchAck",
    "Clock",
    "Consumer",
    "ConsumerConfig",
    "ConsumerNotFound",
    "CorruptRecordError",
    "InvalidStreamConfig",
    "ManualClock",
    "QueryBusy",
    "QueryError",
    "QueryTimeout",
    "QueryTooLarge",
    "Record",
    "RecordTooLarge",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreOpenError",
    "StoreWriteError",
    "StreamConfig",
    "StreamExists",
    "StreamInfo",
    "StreamNotFound",
]
