"""The published PyPI SDK ``robustmq==1.0.0`` (module ``robustmq.mq9``) against our broker.

The SDK is installed into its own virtual environment under the test's temporary directory and
driven by a script run with that environment's interpreter. Skipped, with the reason printed,
only when the package cannot be installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from brokerproc import start_broker

SDK_REQUIREMENT = "robustmq==1.0.0"
INSTALL_TIMEOUT_S = 240
SCRIPT_TIMEOUT_S = 60

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from robustmq.mq9 import Client, Priority
    from robustmq.mq9.client import Mq9Error

    async def main(url):
        out = {}
        client = Client(server=url, request_timeout=10)
        await client.connect()
        box = await client.create(ttl=3600)
        out["mail_id"] = box.mail_id
        named = await client.create(ttl=60, public=True, name="sdk.public.box", desc="demo")
        out["public_mail_id"] = named.mail_id
        try:
            await client.create(ttl=60, public=True, name="sdk.public.box")
        except Mq9Error as exc:
            out["duplicate_error"] = str(exc)
        await client.send(box.mail_id, b"low-bytes", priority="low")
        await client.send(box.mail_id, "normal-text")
        await client.send(box.mail_id, {"kind": "dict"}, priority=Priority.HIGH)
        listed = await client.list(box.mail_id)
        out["listed"] = [[m.msg_id, m.priority.value, m.ts > 0] for m in listed]

        received = []
        got_stored, got_four = asyncio.Event(), asyncio.Event()

        async def handler(msg):
            received.append([msg.msg_id, msg.priority.value, msg.payload.decode()])
            if len(received) >= 3:
                got_stored.set()
            if len(received) >= 4:
                got_four.set()

        await client.subscribe(box.mail_id, handler)
        await asyncio.wait_for(got_stored.wait(), 20)  # the three stored ones: the subscription is live
        await client.send(box.mail_id, b"live", priority="high")
        await asyncio.wait_for(got_four.wait(), 20)
        out["received"] = received

        await client.delete(box.mail_id, listed[0].msg_id)
        out["after_delete"] = [m.msg_id for m in await client.list(box.mail_id)]
        try:
            await client.list("no.such.mailbox")
        except Mq9Error as exc:
            out["missing_error"] = str(exc)
        await client.close()
        print(json.dumps(out))

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("sdk") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    try:
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", SDK_REQUIREMENT],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        reason = f"cannot install {SDK_REQUIREMENT}: pip timed out after {INSTALL_TIMEOUT_S} s"
        print(reason)
        pytest.skip(reason)
    if result.returncode != 0:
        reason = f"cannot install {SDK_REQUIREMENT}: {(result.stderr or result.stdout).strip()[-500:]}"
        print(reason)
        pytest.skip(reason)
    return python


@pytest.fixture(scope="module")
def mq9_broker(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("mq9sdk") / "data", env={"HF_HUB_OFFLINE": "1"})
    yield b
    b.stop()


def test_published_sdk_create_send_subscribe_list_delete(sdk_python, mq9_broker, tmp_path):
    script = tmp_path / "drive_sdk.py"
    script.write_text(SCRIPT)
    run = subprocess.run(
        [str(sdk_python), str(script), mq9_broker.nats_url],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])

    assert out["mail_id"]
    assert out["public_mail_id"] == "sdk.public.box"
    assert out["duplicate_error"] == "mailbox sdk.public.box already exists"
    assert out["listed"] == [[0, "low", True], [1, "normal", True], [2, "high", True]]
    # stored messages are pushed on subscribe (high first, with their msg_id), then the live one
    assert out["received"][:3] == [
        [2, "high", '{"kind": "dict"}'],
        [1, "normal", "normal-text"],
        [0, "low", "low-bytes"],
    ]
    live_id, live_priority, live_payload = out["received"][3]
    assert (live_priority, live_payload) == ("high", "live")
    assert out["after_delete"] == [1, 2, 3]
    assert out["missing_error"] == "mailbox no.such.mailbox does not exist"
