"""Idempotent producers: producer ids, epochs and per-partition sequence checks.

A retried batch (same producer, epoch and sequences as one of the last few) is answered with the
offset it got the first time instead of being stored again; a gap in the sequence is refused.
State lives in memory: after a restart a producer's first batch is accepted as it comes (Kafka
rebuilds it from the log; clients reset their sequences on UNKNOWN_PRODUCER_ID anyway).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from robustmq.bridges.kafka.errors import (
    DUPLICATE_SEQUENCE_NUMBER,
    INVALID_PRODUCER_EPOCH,
    NONE,
    OUT_OF_ORDER_SEQUENCE_NUMBER,
)
from robustmq.bridges.kafka.limits import PRODUCER_DEDUP_BATCHES, PRODUCER_STATE_MAX_IDS


@dataclass(slots=True)
class _PartitionState:
    epoch: int
    last_sequence: int
    # (first sequence, last sequence, base offset) of the last batches stored
    recent: deque = field(default_factory=lambda: deque(maxlen=PRODUCER_DEDUP_BATCHES))


class ProducerRegistry:
    """Hands out producer ids and checks each batch's sequence against what was stored before."""

    def __init__(self, first_id: int) -> None:
        self._next_id = first_id
        self._epochs: OrderedDict[int, int] = OrderedDict()
        self._partitions: dict[tuple[int, str, int], _PartitionState] = {}

    def init_producer(self, producer_id: int = -1, epoch: int = -1) -> tuple[int, int]:
        """A new id (epoch 0), or the next epoch of a known id the client asks to bump."""
        if producer_id >= 0 and producer_id in self._epochs and self._epochs[producer_id] == epoch:
            new_epoch = epoch + 1
            self._epochs[producer_id] = new_epoch
            self._epochs.move_to_end(producer_id)
            return producer_id, new_epoch
        pid = self._next_id
        self._next_id += 1
        self._epochs[pid] = 0
        if len(self._epochs) > PRODUCER_STATE_MAX_IDS:
            old, _ = self._epochs.popitem(last=False)
            for k in [k for k in self._partitions if k[0] == old]:
                del self._partitions[k]
        return pid, 0

    def check(
        self, pid: int, epoch: int, topic: str, partition: int, first: int, last: int
    ) -> tuple[int, int | None]:
        """``(error code, base offset of the duplicate)`` for a batch about to be stored."""
        known_epoch = self._epochs.get(pid)
        if known_epoch is not None and epoch < known_epoch:
            return INVALID_PRODUCER_EPOCH, None
        state = self._partitions.get((pid, topic, partition))
        if state is None or epoch > state.epoch:
            return NONE, None  # first batch of this producer (or epoch) here: take it as it is
        for seq0, seq1, base in state.recent:
            if seq0 == first and seq1 == last:
                return DUPLICATE_SEQUENCE_NUMBER, base
        if first != (state.last_sequence + 1) & 0x7FFFFFFF:
            return OUT_OF_ORDER_SEQUENCE_NUMBER, None
        return NONE, None

    def stored(
        self, pid: int, epoch: int, topic: str, partition: int, first: int, last: int, base: int
    ) -> None:
        key = (pid, topic, partition)
        state = self._partitions.get(key)
        if state is None or epoch > state.epoch:
            state = self._partitions[key] = _PartitionState(epoch, last)
        state.last_sequence = last
        state.recent.append((first, last, base))
        if pid not in self._epochs:
            self._epochs[pid] = epoch
