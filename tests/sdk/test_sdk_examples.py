"""The examples of ``sdk/examples`` run as written against the real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.waits import wait_until
from mq9 import Client

SDK_SRC = Path(__file__).resolve().parents[2] / "sdk" / "src"

EXAMPLES = SDK_SRC.parent / "examples"


def example_env(broker) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(SDK_SRC),
        "MQ9_SERVERS": broker.nats_url,
        "MQ9_MQTT_PORT": str(broker.ports["mqtt"]),
    }


def run_example(name: str, broker) -> str:
    proc = subprocess.run(
        [sys.executable, name],
        cwd=EXAMPLES,
        env=example_env(broker),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def translator_process(sdk_broker):
    proc = subprocess.Popen(
        [sys.executable, "-m", "mq9", "run", "translator:agent"],
        cwd=EXAMPLES, env=example_env(sdk_broker), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    yield proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(20)


async def test_translator_and_caller_examples(sdk_broker, translator_process):
    async with Client(sdk_broker.nats_url) as c:

        async def translator_found() -> bool:
            return any(a.name == "translator" for a in await c.discover(capability="translate"))

        await wait_until(translator_found, 30, interval=0.1)
    out = await asyncio.to_thread(run_example, "caller.py", sdk_broker)
    assert "found translator" in out
    assert "sync: {'text': 'hallo', 'target': 'de'}" in out
    assert "progress {'stage': 'looking up', 'target': 'fr'}" in out
    assert "async: {'text': 'merci', 'target': 'fr'}" in out
    assert "intent went to translator" in out
    assert "as expected: agent nobody-home not found" in out
    translator_process.terminate()
    stdout, _ = await asyncio.to_thread(translator_process.communicate, timeout=20)
    assert translator_process.returncode == 0
    # the message the caller left was handled by the translator's mailbox handler
    assert "mailbox message 0 (urgent): translate the manual by Friday" in stdout


def test_mailbox_worker_example(sdk_broker):
    out = run_example("mailbox_worker.py", sdk_broker)
    assert out.splitlines() == [
        "order o-3 (critical) done",
        "order o-2 (urgent) done",
        "order o-1 (normal) done",
    ]


def test_iot_to_agent_example_mqtt_device_to_agent_mailbox(sdk_broker):
    out = run_example("iot_to_agent.py", sdk_broker)
    assert "alarm from sensor-7: 97.5 (critical)" in out
