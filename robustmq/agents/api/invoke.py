"""Invocation: routing tasks to the least-loaded live instance, deadlines, queueing and retries.

Everything runs from ``deliver`` callbacks and loop timers, without tasks of its own: a request
is dispatched in the same call that received it, and the instance's reply completes the task
and answers the caller in the call that received the reply.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from robustmq.agents import inputs
from robustmq.agents.api import errors, limits
from robustmq.agents.api.guards import TASK_UPDATES_PREFIX
from robustmq.agents.api.instances import Instance, InstanceTable
from robustmq.agents.api.tasks import Task, TaskTable
from robustmq.headers import encode_headers
from robustmq.router import Router

SENDER_HEADER = "mq9-sender"
NOT_SUBSCRIBED_RETRY_S = 0.005  # an instance registered but not yet subscribed to its serve subject


class AgentCounters:
    """Totals and recent latencies of one agent, for ``AGENT.STATUS``."""

    __slots__ = ("processed", "failed", "latencies_ms", "started_ms")

    def __init__(self, now_ms: int) -> None:
        self.processed = 0
        self.failed = 0
        self.latencies_ms: deque[float] = deque(maxlen=limits.LATENCY_WINDOW)
        self.started_ms = now_ms

    def avg_latency_ms(self) -> float:
        lat = self.latencies_ms
        return round(sum(lat) / len(lat), 3) if lat else 0.0

    def p99_latency_ms(self) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3)


def outcome_code(task: Task) -> int:
    """The reply code a finished task answers with."""
    if task.reply_code:
        return task.reply_code
    if task.state == "rejected":
        return errors.NO_LIVE_INSTANCE
    if task.state == "canceled":
        return errors.CONFLICT
    if task.error in (errors.DEADLINE, errors.BROKER_RESTARTED):
        return errors.DEADLINE_EXCEEDED
    return errors.AGENT_FAILED


class Invoker:
    """Owns every task between submission and its final state.

    ``failover(task)`` (intent invocations) returns the next agent to try, or None.
    """

    def __init__(
        self,
        router: Router,
        instances: InstanceTable,
        tasks: TaskTable,
        clock_ms: Callable[[], int],
        failover: Callable[[Task], str | None] | None = None,
        private_delivery: bool = False,
    ) -> None:
        self.router = router
        # with authentication on, work goes only to the registering connection's subscriptions
        self.private_delivery = private_delivery
        self.instances = instances
        self.tasks = tasks
        self._clock_ms = clock_ms
        self._failover = failover
        self._inbox = router.new_inbox() + "."
        self._inbox_sub = router.subscribe(self._inbox + "*", self._on_agent_reply)
        self._waiting: dict[str, deque[Task]] = {}
        self._running: dict[str, Task] = {}
        self._retry_timers: dict[str, asyncio.TimerHandle] = {}
        self._sender_headers: dict[str, bytes | None] = {}
        self.counters: dict[str, AgentCounters] = {}

    def close(self) -> None:
        self.router.unsubscribe(self._inbox_sub)
        for handle in self._retry_timers.values():
            handle.cancel()
        for task in list(self._running.values()) + [t for q in self._waiting.values() for t in q]:
            if task.timer is not None:
                task.timer.cancel()

    # -- submission ---------------------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        """Record a new task, arm its deadline and route it (dispatch, queue or reject)."""
        task.submitted_ns = time.perf_counter_ns()
        self.tasks.add(task)
        self._arm_deadline(task)
        self._route(task)

    def resume(self, task: Task) -> None:
        """Re-dispatch a task recovered after a restart, or fail it when its deadline has passed."""
        if self._clock_ms() >= task.deadline_ms:
            task.reply_code = errors.DEADLINE_EXCEEDED
            self._finish(task, "failed", error=errors.BROKER_RESTARTED)
            return
        task.on_offline = "queue"  # it was accepted before the restart: wait for an instance
        if task.state != "submitted":
            self.tasks.set_state(task, "submitted", instance_id=None)
        self._arm_deadline(task)
        self._enqueue(task, front=False)

    def waiting_count(self, agent: str) -> int:
        return sum(1 for t in self._waiting.get(agent, ()) if t.queued)

    def active_count(self, agent: str) -> int:
        running = sum(1 for t in self._running.values() if t.agent == agent)
        return running + self.waiting_count(agent)

    def counters_of(self, agent: str) -> AgentCounters:
        c = self.counters.get(agent)
        if c is None:
            c = self.counters[agent] = AgentCounters(self._clock_ms())
        return c

    # -- routing ------------------------------------------------------------------------------------

    def _route(self, task: Task) -> None:
        inst = self.instances.least_loaded(task.agent, task.excluded)
        if inst is not None and self._dispatch(task, inst):
            return
        if inst is not None or self.instances.has_live(task.agent) or task.on_offline == "queue":
            self._enqueue(task)
            return
        self._no_live_instance(task)

    def _no_live_instance(self, task: Task) -> None:
        if self._try_failover(task, "no live instance"):
            return
        task.reply_code = errors.NO_LIVE_INSTANCE
        state = "rejected" if task.attempts == 0 else "failed"
        self._finish(task, state, error=errors.NO_LIVE.format(name=task.agent))

    def _try_failover(self, task: Task, reason: str) -> bool:
        if self._failover is None or not task.intent:
            return False
        nxt = self._failover(task)
        if nxt is None:
            return False
        self.tasks.add_event(task, "failover", {"from": task.agent, "to": nxt, "reason": reason})
        task.agent = nxt
        task.excluded = set()
        # the update feed's watchers change with the agent's owner (see guards.py)
        self.router.trie.forget((TASK_UPDATES_PREFIX + task.id,))
        self.tasks.write_snapshot(task)
        self._route(task)
        return True

    def _enqueue(self, task: Task, front: bool = False) -> None:
        task.queued = True
        q = self._waiting.get(task.agent)
        if q is None:
            q = self._waiting[task.agent] = deque()
        if front:
            q.appendleft(task)
        else:
            q.append(task)

    def _dispatch(self, task: Task, inst: Instance) -> bool:
        """Send ``task`` to ``inst``; False when the instance is not subscribed to its serve subject yet."""
        targets = self._targets(inst)
        if not targets:
            self._retry_later(task.agent)
            return False
        body = self.work_body(task)
        inst.in_flight += 1
        inst.tasks.add(task.id)
        task.instance = inst
        task.attempts += 1
        task.queued = False
        self._running[task.id] = task
        self.tasks.set_state(task, "working", instance_id=inst.instance_id)
        task.dispatched_ns = time.perf_counter_ns()
        # an in-process instance may answer inside this call; the task is ready for it
        reply, headers = self._inbox + task.id, self._headers_for(task.sender)
        if targets is True:
            self.router.publish(inst.serve_subject, body, reply, headers)
        else:
            for sub in targets:
                sub.deliver(inst.serve_subject, reply, headers, body)
        return True

    def work_body(self, task: Task) -> bytes:
        """What an instance receives for ``task`` (tools override this)."""
        return orjson.dumps(
            {"task_id": task.id, "skill": task.skill, "input": task.input, "deadline_ms": task.deadline_ms}
        )

    def read_result(self, task: Task, answer: dict[str, Any]) -> tuple[Any, str | None]:
        """An instance's successful answer as ``(output, None)``, or ``(None, problem)`` (tools check it)."""
        return answer.get("output"), None

    def outcome_reply(self, task: Task, now_ms: int) -> dict[str, Any]:
        """What sync callers receive when ``task`` ends (tools override this)."""
        return outcome_reply(task, now_ms)

    def _targets(self, inst: Instance) -> Any:
        """Where ``inst``'s work goes: True to publish on the serve subject, else a list of subscriptions.

        The instance counts as ready only once its own connection (or, in process, a subscription
        on exactly the serve subject) listens: a service's wildcard such as ``$mq9.AI.>`` does not.
        With ``private_delivery`` only the instance connection's subscriptions get the work.
        """
        result = self.router.trie.match(inst.serve_subject)
        if not result:
            return []
        owner = inst.origin
        own = []
        for sub in result.plain:
            if (sub.owner is owner) if owner is not None else (sub.subject == inst.serve_subject):
                own.append(sub)
        for members in result.queues:
            for sub in members:
                if (sub.owner is owner) if owner is not None else (sub.subject == inst.serve_subject):
                    own.append(sub)
                    break
        if not own:
            return []
        return own if self.private_delivery else True

    def _headers_for(self, sender: str | None) -> bytes | None:
        if sender is None:
            return None
        block = self._sender_headers.get(sender)
        if block is None:
            block = self._sender_headers[sender] = encode_headers([(SENDER_HEADER, sender)])
        return block

    def _retry_later(self, agent: str) -> None:
        if agent in self._retry_timers:
            return
        loop = asyncio.get_running_loop()
        self._retry_timers[agent] = loop.call_later(NOT_SUBSCRIBED_RETRY_S, self._retry_fired, agent)

    def _retry_fired(self, agent: str) -> None:
        self._retry_timers.pop(agent, None)
        self.drain(agent)

    def drain(self, agent: str) -> None:
        """Dispatch waiting tasks of ``agent`` while an instance has room."""
        q = self._waiting.get(agent)
        while q:
            task = q[0]
            if not task.queued or task.finished or task.agent != agent:
                q.popleft()
                continue
            inst = self.instances.least_loaded(agent, task.excluded)
            if inst is None:
                if not self.instances.has_live(agent) and task.on_offline == "fail":
                    q.popleft()
                    task.queued = False
                    self._no_live_instance(task)
                    continue
                break
            q.popleft()
            task.queued = False
            if not self._dispatch(task, inst):
                task.queued = True
                q.appendleft(task)
                break
        if q is not None and not q:
            self._waiting.pop(agent, None)

    # -- outcomes -------------------------------------------------------------------------------------

    def _on_agent_reply(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        task = self._running.pop(subject[len(self._inbox) :], None)
        if task is None:
            return  # late: the task already ended (deadline, cancel, instance lost)
        inst = task.instance
        self._release(task)
        latency_ns = time.perf_counter_ns() - task.dispatched_ns
        problem = errors.BAD_AGENT_REPLY
        answer: Any = None
        if inputs.too_deep(payload):  # an output the task journal and the replies could not encode
            problem = errors.AGENT_REPLY_TOO_DEEP.format(max=inputs.MAX_NESTING_DEPTH)
        else:
            try:
                answer = orjson.loads(payload)
            except orjson.JSONDecodeError:
                pass
        skill = task.skill or "default"
        if not isinstance(answer, dict):
            self._count(task, inst, skill, False, latency_ns, problem)
            task.reply_code = errors.AGENT_FAILED
            self._finish(task, "failed", error=problem)
        elif answer.get("error"):
            text = (
                answer["error"]
                if isinstance(answer["error"], str)
                else orjson.dumps(answer["error"]).decode()
            )
            self._count(task, inst, skill, False, latency_ns, text)
            if not self._try_failover(task, text):
                task.reply_code = errors.AGENT_FAILED
                self._finish(task, "failed", error=errors.AGENT_ERROR.format(detail=text))
        else:
            output, problem = self.read_result(task, answer)
            if problem is None:
                self._count(task, inst, skill, True, latency_ns)
                self._finish(task, "completed", output=output)
            else:
                self._count(task, inst, skill, False, latency_ns, problem)
                task.reply_code = errors.AGENT_FAILED
                self._finish(task, "failed", error=problem)
        self.drain(task.agent)

    def _count(
        self, task: Task, inst: Instance | None, skill: str, ok: bool, latency_ns: int, error: str = ""
    ) -> None:
        c = self.counters_of(task.agent)
        c.latencies_ms.append(latency_ns / 1e6)
        if ok:
            c.processed += 1
        else:
            c.failed += 1
        if inst is not None:
            if ok:
                inst.processed += 1
            else:
                inst.failed += 1
            inst.count_call(skill, ok, latency_ns, error)

    def _release(self, task: Task) -> None:
        inst = task.instance
        if inst is not None:
            inst.in_flight -= 1
            inst.tasks.discard(task.id)
            task.instance = None

    def _arm_deadline(self, task: Task) -> None:
        loop = asyncio.get_running_loop()
        delay_s = max(0.0, (task.deadline_ms - self._clock_ms()) / 1000)
        task.timer = loop.call_later(delay_s, self._deadline_passed, task)

    def _deadline_passed(self, task: Task) -> None:
        task.timer = None
        if task.finished:
            return
        self._stop_work(task)
        task.reply_code = errors.DEADLINE_EXCEEDED
        self._finish(task, "failed", error=errors.DEADLINE)

    def _stop_work(self, task: Task) -> None:
        """Take ``task`` off its instance (telling the instance) or out of the waiting queue."""
        task.queued = False
        if self._running.pop(task.id, None) is not None:
            inst = task.instance
            self._release(task)
            if inst is not None and inst.alive:
                body = orjson.dumps({"task_id": task.id, "cancel": True})
                targets = self._targets(inst)
                if targets is True:
                    self.router.publish(inst.serve_subject, body, None, self._headers_for(task.sender))
                elif targets:
                    for sub in targets:
                        sub.deliver(inst.serve_subject, None, self._headers_for(task.sender), body)
                self.drain(task.agent)

    def cancel(self, task: Task) -> None:
        self._stop_work(task)
        task.reply_code = errors.CONFLICT
        self._finish(task, "canceled", error=errors.TASK_CANCELED)

    def instance_down(self, inst: Instance, reason: str) -> None:
        """An instance died: retry its tasks elsewhere, or fail them; reject waiting ``fail`` tasks."""
        for task_id in list(inst.tasks):
            task = self._running.pop(task_id, None)
            if task is None:
                continue
            self._release(task)
            task.excluded.add(inst.instance_id)
            if task.attempts <= task.retries:
                self.tasks.add_event(task, "retry", {"instance_id": inst.instance_id, "reason": reason})
                self._route(task)
                continue
            if self._try_failover(task, reason):
                continue
            task.reply_code = errors.AGENT_FAILED
            self._finish(task, "failed", error=errors.INSTANCE_LOST.format(instance_id=inst.instance_id))
        inst.tasks.clear()
        self.drain(inst.agent)

    def _finish(self, task: Task, state: str, **fields: Any) -> None:
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        self.tasks.set_state(task, state, **fields)
        if task.waiters:
            body = orjson.dumps(self.outcome_reply(task, self._clock_ms()))
            for reply in task.waiters:
                self.router.publish(reply, body)
            task.waiters = []
        self.tasks.archive(task)


def outcome_reply(task: Task, now_ms: int) -> dict[str, Any]:
    """The sync INVOKE reply for a finished task."""
    if task.state == "completed":
        body: dict[str, Any] = {
            "error": "",
            "task_id": task.id,
            "state": "completed",
            "output": task.output,
            "instance_id": task.instance_id,
            "latency_ms": _latency_ms(task),
        }
    else:
        body = {
            "error": task.error or task.state,
            "code": outcome_code(task),
            "task_id": task.id,
            "state": task.state,
            "instance_id": task.instance_id,
        }
    if task.intent:
        body["agent"] = task.agent
    return body


def _latency_ms(task: Task) -> float:
    if task.submitted_ns:
        return round((time.perf_counter_ns() - task.submitted_ns) / 1e6, 3)
    return float(max(0, task.updated_ms - task.created_ms))
