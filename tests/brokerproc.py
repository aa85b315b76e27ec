"""A real broker process on loopback ports chosen at run time, for tests and fixtures.

Imported by ``conftest.py`` and by tests that manage brokers themselves (``from brokerproc import ...``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

READY_TIMEOUT_S = 30.0
_READY = re.compile(r"\bready\b(.*)$")


@dataclass
class BrokerProcess:
    """A running ``robustmq serve``; ``ports`` maps listener name -> bound port."""

    proc: subprocess.Popen
    data_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.ports['nats']}"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.ports['amqp']}/"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['kafka']}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def start_broker(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None, stderr: IO[str] | None = None
) -> BrokerProcess:
    """Start the broker with every listener on an ephemeral loopback port and wait for ``ready``.

    ``stderr``: a file the broker's log goes to (None: this process's stderr).
    """
    args = [
        sys.executable, "-m", "robustmq", "serve", "--host", "127.0.0.1", "--data-dir", str(data_dir),
        "--nats-port", "0", "--mqtt-port", "0", "--amqp-port", "0", "--kafka-port", "0", "--http-port", "0",
        *extra,
    ]  # fmt: skip
    # later flags win, so callers can still turn a listener off or pin it
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            proc.wait(5)
            raise RuntimeError(f"broker exited before ready (code {proc.returncode})")
        m = _READY.search(line)
        if m:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("broker did not print ready in time")
    # keep draining stdout so a chatty broker never blocks on a full pipe
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    ports = {}
    for item in m.group(1).split():
        name, _, addr = item.partition("=")
        ports[name] = int(addr.rsplit(":", 1)[1])
    return BrokerProcess(proc, data_dir, ports, args)
