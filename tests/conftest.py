"""Shared fixtures: a real broker process on loopback ports chosen at run time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from brokerproc import BrokerProcess, start_broker

__all__ = ["BrokerProcess", "start_broker"]


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator:
    """Call ``broker_factory(*flags)`` to start a broker; every one started is stopped afterwards."""
    started: list[BrokerProcess] = []

    def make(*extra: str, data_dir: Path | None = None, env: dict[str, str] | None = None) -> BrokerProcess:
        b = start_broker(data_dir or tmp_path / "data", *extra, env=env)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def broker(broker_factory) -> BrokerProcess:
    """One broker with default settings on ephemeral loopback ports."""
    return broker_factory()
