"""Fixtures for store tests: a manual clock and stores opened on a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustmq.config import StoreSettings
from robustmq.store import ManualClock, Store


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def open_store(data_dir: Path, clock: ManualClock):
    """``await open_store(index=False, **settings)``; every store opened is stopped afterwards."""
    opened: list[Store] = []

    async def make(index: bool = False, router=None, streams=(), sql_limits=None, **settings) -> Store:
        st = Store(
            StoreSettings(data_dir=settings.pop("data_dir", data_dir), **settings),
            router=router, clock=clock, index=index, streams=streams, sql_limits=sql_limits,
        )  # fmt: skip
        await st.start()
        opened.append(st)
        return st

    yield make
    for st in opened:
        await st.stop()
