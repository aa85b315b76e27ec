"""Every error the store raises, with its text in one place.

Producers and services catch ``StoreError``; the subclasses say which rule was broken.
"""

from __future__ import annotations

NO_SUCH_STREAM = "stream not found: {name}"
STREAM_EXISTS = "stream already exists: {name}"
BAD_STREAM_NAME = "invalid stream name: {name!r}"
BAD_PARTITION = "stream {name} has no partition {partition}"
RECORD_TOO_LARGE = "record of {size} bytes exceeds the limit of {limit} bytes"
WRITE_FAILED = "cannot write to the store at {path}: {reason}"
OPEN_FAILED = "cannot open the store at {path}: {reason}"
CORRUPT_RECORD = "corrupt record in {path} at position {pos} (offset {offset}): checksum mismatch"
NO_SUCH_CONSUMER = "consumer not found: {name} on stream {stream}"
STORE_CLOSED = "the store is closed"
NOT_COMMITTED = "offset {offset} is not in stream {name} partition {partition}"
SQL_NOT_READ_ONLY = "only a single SELECT statement is allowed"
SQL_TIMEOUT = "query exceeded its time limit of {seconds} s"
SQL_FAILED = "query failed: {reason}"
SQL_RELATION_REFUSED = "query may read only messages, deletions and archive, not {name}"
SQL_FUNCTION_REFUSED = "function {name} is not allowed in a query"
SQL_MEMORY = "query exceeded its memory limit of {mib} MiB"
SQL_BUSY = "too many queries are running; retry in {seconds} s"
BAD_STREAM_CONFIG = "invalid stream definition: {reason}"


class StoreError(Exception):
    """Base class of every store error."""


class StreamNotFound(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StreamExists(StoreError):
    pass


class InvalidStreamConfig(StoreError, ValueError):
    pass


class RecordTooLarge(StoreError, ValueError):
    pass


class StoreWriteError(StoreError, OSError):
    """A commit could not be written (disk full, directory unwritable, I/O error); nothing was stored."""


class StoreOpenError(StoreError, OSError):
    """The data directory cannot be opened or created."""


class CorruptRecordError(StoreError):
    pass


class ConsumerNotFound(StoreError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StoreClosed(StoreError):
    pass


class QueryError(StoreError, ValueError):
    """A query was refused (not read-only, bad SQL) or failed."""


class QueryTimeout(QueryError, TimeoutError):
    pass


class QueryTooLarge(QueryError):
    """The query needed more memory than its limit."""


class QueryBusy(QueryError):
    """Every query slot and queue place is taken; ``retry_after_s`` says when to come back."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
