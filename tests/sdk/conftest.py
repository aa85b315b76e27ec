"""The SDK's tests import ``mq9`` from ``sdk/src``, the way an agent that installed it would."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SDK_SRC = Path(__file__).resolve().parents[2] / "sdk" / "src"
if str(SDK_SRC) not in sys.path:
    sys.path.insert(0, str(SDK_SRC))


def _project_fixtures():
    """The project's tests/conftest.py as a module, for ``start_broker`` (both files are 'conftest')."""
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("robustmq_test_fixtures", path)
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sdk_broker(tmp_path_factory):
    """One broker for a whole test module: every test uses its own agent and mailbox names."""
    broker = _project_fixtures().start_broker(tmp_path_factory.mktemp("broker") / "data")
    yield broker
    broker.stop()


@pytest.fixture
def agent_processes(tmp_path: Path) -> Iterator:
    """``spawn(source, "module:agent", url)`` runs ``python -m mq9 run`` on a module written to tmp."""
    started: list[subprocess.Popen] = []

    def spawn(source: str, target: str, url: str, *extra: str) -> subprocess.Popen:
        module = target.split(":", 1)[0]
        (tmp_path / f"{module}.py").write_text(source)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SDK_SRC), str(tmp_path)])}
        proc = subprocess.Popen(
            [sys.executable, "-m", "mq9", "run", target, "--servers", url, *extra],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
