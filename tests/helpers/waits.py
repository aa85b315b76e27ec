"""Waiting on a condition instead of sleeping: poll until it holds, fail at a deadline.

A test that sleeps and then asserts is slow on an idle machine and flaky on a busy one.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

WAIT_S = 5.0
"""How long a wait lasts before the test fails: far longer than any condition needs on loopback."""

POLL_S = 0.01
"""How often a condition is checked."""

QUIET_S = 0.2
"""How long a test watches for something that must NOT happen, once a round trip has flushed
everything sent before it. No event marks an absence, so this is the one place a test sleeps."""


async def wait_until(
    predicate: Callable[[], Any], timeout: float = WAIT_S, interval: float = POLL_S, what: str = "condition"
) -> Any:
    """Until ``predicate()`` is truthy (an awaitable result is awaited); returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(interval)


async def wait_for(
    fetch: Callable[[], Awaitable[T]],
    check: Callable[[T], Any],
    timeout: float = WAIT_S,
    interval: float = POLL_S,
) -> T:
    """Call ``fetch()`` until ``check(result)`` holds; returns that result (the last one in the error)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await fetch()
        if check(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s; last: {result!r}")
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], Any], timeout: float = WAIT_S, interval: float = POLL_S, what: str = "condition"
) -> Any:
    """The blocking form of ``wait_until``, for tests on threads (paho, raw sockets, subprocesses)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


async def request_started(nc: Any, request: Awaitable[T]) -> asyncio.Future[T]:
    """Start a request on nats-py connection ``nc``; return once the broker has it.

    The request is running when the client has published it, and the broker has read it when the
    PING sent after it comes back: what ``nc`` publishes next is handled after it.
    """
    before = nc.stats["out_msgs"]
    pending = asyncio.ensure_future(request)
    await wait_until(lambda: nc.stats["out_msgs"] > before or pending.done(), what="the request going out")
    await nc.flush()
    return pending
