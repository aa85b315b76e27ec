"""Crash safety: a child process appends with fsync ``always`` and reports every acknowledged
offset; it is killed with SIGKILL at random moments; after each reopen every acknowledged record
is there with identical bytes, offsets are dense and nothing is duplicated. Meanwhile it creates
and deletes streams: every definition change that returned is there after the reopen.

Run as a script (``python test_store_crash.py child DIR ROUND INDEX``) it is the child.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

LONG = os.environ.get("ROBUSTMQ_LONG_TESTS") == "1"
ROUNDS = 100 if LONG else 20
STREAM = "crash"
PRODUCERS = 8
DEFINE_EVERY_S = 0.005


def _digest(payload: bytes) -> str:
    return hashlib.sha1(payload).hexdigest()


async def _child(data_dir: str, round_no: int, with_index: bool) -> None:
    from robustmq.config import StoreSettings
    from robustmq.store import Store

    settings = StoreSettings(data_dir=data_dir, fsync="always", segment_max_bytes=64 * 1024)
    st = Store(settings, index=with_index)
    await st.start()
    st.create_stream({"name": STREAM}, exist_ok=True)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    rng = random.Random(round_no)

    async def produce(pid: int) -> None:
        i = 0
        while True:
            batch = []
            for _ in range(rng.randint(1, 20)):
                payload = f"{round_no}:{pid}:{i}:".encode() + os.urandom(rng.randint(0, 400))
                batch.append((payload, st.append(STREAM, payload, key=f"p{pid}")))
                i += 1
            lines = []
            for payload, ack in batch:
                lines.append(f"{await ack} {_digest(payload)}\n")
            out.write("".join(lines))
            out.flush()

    async def define() -> None:
        n = 0
        while True:
            name = f"def.{round_no}.{n}"
            st.create_stream({"name": name, "kind": "mailbox"})
            out.write(f"stream {name}\n")
            if n % 3 == 2:
                gone = f"def.{round_no}.{n - 1}"
                out.write(f"deleting {gone}\n")  # from here on either answer is right
                out.flush()
                st.delete_stream(gone)
                out.write(f"gone {gone}\n")
            out.flush()
            n += 1
            await asyncio.sleep(DEFINE_EVERY_S)  # pacing, not a wait: definitions interleave with appends

    await asyncio.gather(define(), *(produce(p) for p in range(PRODUCERS)))


def _run_round(
    data_dir: Path, round_no: int, with_index: bool, rng: random.Random, streams: dict[str, bool]
) -> dict[int, str]:
    """Start the child, kill it with SIGKILL at a random moment, return what it acknowledged
    (and note in ``streams`` which definitions it created or deleted)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "child", str(data_dir), str(round_no), "1" if with_index else "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    acked: dict[int, str] = {}
    ready = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ready"):
                ready.set()
                continue
            if line.startswith(("stream ", "gone ", "deleting ")):
                what, name = line.split()
                if what == "deleting":
                    streams.pop(name, None)
                else:
                    streams[name] = what == "stream"
                continue
            off, digest = line.split()
            acked[int(off)] = digest

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        assert ready.wait(30), "child did not start"
        time.sleep(rng.uniform(0.02, 0.4))  # a random moment to crash at is the point of the campaign
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        t.join(10)
    return acked


async def _check(data_dir: Path, acked: dict[int, str], with_index: bool, streams: dict[str, bool]) -> int:
    from robustmq.config import StoreSettings
    from robustmq.store import Store

    st = Store(StoreSettings(data_dir=data_dir, segment_max_bytes=64 * 1024), index=with_index)
    await st.start()
    try:
        end = st.end_offset(STREAM)
        recs = []
        off = 0
        while True:
            chunk = st.read(STREAM, off, 5000)
            if not chunk:
                break
            recs.extend(chunk)
            off = chunk[-1].offset + 1
        assert [r.offset for r in recs] == list(range(end)), "offsets are not dense"
        digests = {r.offset: _digest(r.payload) for r in recs}
        missing = [o for o, d in acked.items() if digests.get(o) != d]
        assert not missing, f"acknowledged records lost or changed: {missing[:10]}"
        prefixes = [r.payload.split(b":", 3)[:3] for r in recs]
        assert len(set(map(tuple, prefixes))) == len(prefixes), "a record was stored twice"
        assert st.verify(STREAM) == []
        wrong = [name for name, there in streams.items() if st.has_stream(name) != there]
        assert not wrong, f"stream definitions lost or resurrected: {wrong[:10]}"
        if with_index:
            await st.sync_index()
            got = await st.sql(
                f"SELECT count(*), count(DISTINCT off) FROM messages WHERE stream = '{STREAM}'"
            )
            assert got["rows"] == [(end, end)], "index not caught up from the log"
        return end
    finally:
        await st.stop()


@pytest.mark.slow
@pytest.mark.timeout(600 if LONG else 120)
async def test_acknowledged_records_survive_sigkill_with_fsync_always(tmp_path):
    data_dir = tmp_path / "data"
    rng = random.Random()
    acked_total: dict[int, str] = {}
    sizes = []
    streams: dict[str, bool] = {}
    for round_no in range(ROUNDS):
        with_index = round_no % 4 == 3
        acked = await asyncio.to_thread(_run_round, data_dir, round_no, with_index, rng, streams)
        assert not (set(acked) & set(acked_total)), "an offset was acknowledged twice"
        acked_total.update(acked)
        sizes.append(await _check(data_dir, acked_total, with_index, streams))
    assert sizes == sorted(sizes) and sizes[-1] >= len(acked_total) > 0
    assert any(streams.values()) and not all(streams.values())


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "child":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import uvloop

    uvloop.run(_child(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"))
