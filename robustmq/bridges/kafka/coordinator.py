"""The group coordinator: consumer-group membership as one explicit state machine.

States (as Kafka's): Empty -> PreparingRebalance -> CompletingRebalance -> Stable, back to
PreparingRebalance on a join, a leave or a session timeout. Pure asyncio, no sockets: the listener
awaits ``join`` and ``sync`` and gets plain results. Committed offsets are not kept here; they are
store consumers (see ``service.py``), so they survive a restart while membership does not.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field

from robustmq.bridges.kafka import errors as E
from robustmq.bridges.kafka.limits import (
    GROUP_INITIAL_REBALANCE_DELAY_MS,
    GROUP_MAX_SESSION_TIMEOUT_MS,
    GROUP_MIN_SESSION_TIMEOUT_MS,
    MAX_MEMBERS_PER_GROUP,
)

EMPTY = "Empty"
PREPARING = "PreparingRebalance"
COMPLETING = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"


@dataclass
class JoinResult:
    error: int
    generation: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    member_id: str = ""
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)  # id, instance id, metadata


@dataclass
class Member:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_future: asyncio.Future | None = None
    sync_future: asyncio.Future | None = None
    timer: asyncio.TimerHandle | None = None

    def metadata_for(self, protocol: str) -> bytes:
        return next((m for n, m in self.protocols if n == protocol), b"")


class Group:
    """One consumer group's membership, generation and assignments."""

    def __init__(self, group_id: str, coordinator: GroupCoordinator) -> None:
        self.group_id = group_id
        self.coordinator = coordinator
        self.state = EMPTY
        self.generation = 0
        self.protocol_type: str | None = None
        self.protocol: str | None = None
        self.leader: str | None = None
        self.members: dict[str, Member] = {}
        self.static: dict[str, str] = {}  # group.instance.id -> member id
        self._rebalance_timer: asyncio.TimerHandle | None = None
        self._initial_delay = False  # the first rebalance of an empty group waits for more members

    # -- membership ------------------------------------------------------------------------------

    def join(self, member: Member, protocol_type: str) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        old = self.members.get(member.member_id)
        if old is not None:
            self._cancel_timer(old)
            member.assignment = old.assignment
            if old.join_future is not None and not old.join_future.done():
                old.join_future.set_result(JoinResult(E.UNKNOWN_MEMBER_ID))
        self.protocol_type = protocol_type
        member.join_future = fut
        self.members[member.member_id] = member
        if member.instance_id is not None:
            self.static[member.instance_id] = member.member_id
        self._arm_session(member)
        if self.state in (EMPTY, STABLE, COMPLETING):
            self._prepare_rebalance(initial=self.state == EMPTY)
        else:
            self._maybe_complete_join()
        return fut

    def _prepare_rebalance(self, initial: bool = False) -> None:
        for m in self.members.values():  # a pending sync of the old generation fails
            if m.sync_future is not None and not m.sync_future.done():
                m.sync_future.set_result((E.REBALANCE_IN_PROGRESS, b""))
        self.state = PREPARING
        self._initial_delay = initial
        if self._rebalance_timer is not None:
            self._rebalance_timer.cancel()
        timeout_ms = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
        loop = asyncio.get_running_loop()
        if initial:
            self._rebalance_timer = loop.call_later(
                GROUP_INITIAL_REBALANCE_DELAY_MS / 1000, self._complete_join
            )
        else:
            self._rebalance_timer = loop.call_later(timeout_ms / 1000, self._complete_join)
            self._maybe_complete_join()

    def _maybe_complete_join(self) -> None:
        if self.state != PREPARING or not self.members:
            return
        if self._initial_delay:
            return
        if all(m.join_future is not None and not m.join_future.done() for m in self.members.values()):
            self._complete_join()

    def _complete_join(self) -> None:
        if self.state != PREPARING:
            return
        self._initial_delay = False
        if self._rebalance_timer is not None:
            self._rebalance_timer.cancel()
            self._rebalance_timer = None
        for m in list(self.members.values()):  # members that did not rejoin in time are out
            if m.join_future is None or m.join_future.done():
                self._remove(m)
        if not self.members:
            self.state = EMPTY
            self.generation += 1
            self.leader = None
            return
        self.protocol = self._choose_protocol()
        if self.protocol is None:
            for m in list(self.members.values()):
                m.join_future.set_result(JoinResult(E.INCONSISTENT_GROUP_PROTOCOL))  # type: ignore[union-attr]
                self._remove(m)
            self.state = EMPTY
            return
        self.generation += 1
        if self.leader not in self.members:
            self.leader = next(iter(self.members))
        self.state = COMPLETING
        everyone = [
            (m.member_id, m.instance_id, m.metadata_for(self.protocol)) for m in self.members.values()
        ]
        for m in self.members.values():
            fut, m.join_future = m.join_future, None
            result = JoinResult(
                E.NONE, self.generation, self.protocol_type, self.protocol, self.leader or "",
                m.member_id, everyone if m.member_id == self.leader else [],
            )  # fmt: skip
            if fut is not None and not fut.done():
                fut.set_result(result)
            self._arm_session(m)

    def _choose_protocol(self) -> str | None:
        members = list(self.members.values())
        common = set.intersection(*({n for n, _ in m.protocols} for m in members))
        if not common:
            return None
        for name, _ in members[0].protocols:  # the first member's preference among the common ones
            if name in common:
                return name
        return None

    def sync(self, member_id: str, generation: int, assignments: dict[str, bytes]) -> asyncio.Future | int:
        member = self.members.get(member_id)
        if member is None:
            return E.UNKNOWN_MEMBER_ID
        if generation != self.generation:
            return E.ILLEGAL_GENERATION
        if self.state == PREPARING:
            return E.REBALANCE_IN_PROGRESS
        self._arm_session(member)
        fut = asyncio.get_running_loop().create_future()
        if self.state == STABLE:
            fut.set_result((E.NONE, member.assignment))
            return fut
        member.sync_future = fut
        if member_id == self.leader:
            for m in self.members.values():
                m.assignment = assignments.get(m.member_id, b"")
            self.state = STABLE
            for m in self.members.values():
                if m.sync_future is not None and not m.sync_future.done():
                    m.sync_future.set_result((E.NONE, m.assignment))
                    m.sync_future = None
        return fut

    def heartbeat(self, member_id: str, generation: int) -> int:
        member = self.members.get(member_id)
        if member is None:
            return E.UNKNOWN_MEMBER_ID
        self._arm_session(member)
        if generation != self.generation:
            return E.ILLEGAL_GENERATION
        if self.state == PREPARING:
            return E.REBALANCE_IN_PROGRESS
        return E.NONE

    def leave(self, member_id: str) -> int:
        member = self.members.get(member_id)
        if member is None:
            return E.UNKNOWN_MEMBER_ID
        self._remove(member)
        self._membership_changed()
        return E.NONE

    def check_generation(self, member_id: str, generation: int) -> int:
        """For OffsetCommit: generation -1 is a commit from outside the group (always allowed)."""
        if generation < 0 and not member_id:
            return E.NONE
        if member_id not in self.members:
            return E.UNKNOWN_MEMBER_ID
        if generation != self.generation:
            return E.ILLEGAL_GENERATION
        if self.state == COMPLETING:  # while preparing, the old generation may still commit (as Kafka)
            return E.REBALANCE_IN_PROGRESS
        return E.NONE

    def _membership_changed(self) -> None:
        if not self.members:
            if self._rebalance_timer is not None:
                self._rebalance_timer.cancel()
                self._rebalance_timer = None
            self.state = EMPTY
            self.leader = None
            self.generation += 1
        elif self.state == PREPARING:
            self._maybe_complete_join()
        else:
            self._prepare_rebalance()

    def _remove(self, member: Member) -> None:
        self._cancel_timer(member)
        self.members.pop(member.member_id, None)
        if member.instance_id is not None and self.static.get(member.instance_id) == member.member_id:
            del self.static[member.instance_id]
        for fut in (member.join_future, member.sync_future):
            if fut is not None and not fut.done():
                fut.set_result(
                    JoinResult(E.UNKNOWN_MEMBER_ID)
                    if fut is member.join_future
                    else (E.UNKNOWN_MEMBER_ID, b"")
                )
        if self.leader == member.member_id:
            self.leader = None

    # -- sessions --------------------------------------------------------------------------------

    def _arm_session(self, member: Member) -> None:
        self._cancel_timer(member)
        loop = asyncio.get_running_loop()
        member.timer = loop.call_later(member.session_timeout_ms / 1000, self._expire, member.member_id)

    def _cancel_timer(self, member: Member) -> None:
        if member.timer is not None:
            member.timer.cancel()
            member.timer = None

    def _expire(self, member_id: str) -> None:
        member = self.members.get(member_id)
        if member is None:
            return
        if member.join_future is not None and not member.join_future.done():
            self._arm_session(member)  # waiting in a join: the rebalance timeout governs it
            return
        self._remove(member)
        self._membership_changed()

    def close(self) -> None:
        for m in list(self.members.values()):
            self._remove(m)
        if self._rebalance_timer is not None:
            self._rebalance_timer.cancel()


class GroupCoordinator:
    """Every group of this broker (the only coordinator of the cluster)."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self._ids = itertools.count(1)

    def group(self, group_id: str, create: bool = True) -> Group | None:
        g = self.groups.get(group_id)
        if g is None and create:
            g = self.groups[group_id] = Group(group_id, self)
        return g

    async def join(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
    ) -> JoinResult:
        if not group_id:
            return JoinResult(E.INVALID_GROUP_ID)
        if not GROUP_MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= GROUP_MAX_SESSION_TIMEOUT_MS:
            return JoinResult(E.INVALID_SESSION_TIMEOUT)
        if not protocols:
            return JoinResult(E.INCONSISTENT_GROUP_PROTOCOL)
        group = self.group(group_id)
        assert group is not None
        if group.protocol_type is not None and group.members and group.protocol_type != protocol_type:
            return JoinResult(E.INCONSISTENT_GROUP_PROTOCOL)
        if member_id and member_id not in group.members:
            if instance_id is None or group.static.get(instance_id) != member_id:
                return JoinResult(E.UNKNOWN_MEMBER_ID)
        if not member_id:
            if instance_id is not None and instance_id in group.static:
                old = group.members.get(group.static[instance_id])
                if old is not None:  # a static member coming back replaces its old self
                    group._remove(old)
            elif len(group.members) >= MAX_MEMBERS_PER_GROUP:
                return JoinResult(E.INVALID_REQUEST)
            member_id = f"{client_id or 'member'}-{uuid.uuid4()}"
        member = Member(
            member_id, instance_id, client_id, client_host, session_timeout_ms,
            max(rebalance_timeout_ms, session_timeout_ms), protocols,
        )  # fmt: skip
        return await group.join(member, protocol_type)

    def close(self) -> None:
        for g in self.groups.values():
            g.close()
