"""``sdk/`` is its own distribution: built as a wheel, installed into a fresh virtual environment
that holds only nats-py and pydantic, it imports and serves without any of the broker's packages."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers.waits import wait_until
from mq9 import Client

SDK_SRC = Path(__file__).resolve().parents[2] / "sdk" / "src"

SDK_DIR = SDK_SRC.parent
ALLOWED = {"nats-py", "pydantic"}
BROKER_ONLY = ["robustmq", "duckdb", "fastapi", "orjson", "uvloop", "wordllama", "jsonschema", "numpy"]

CHECK_IMPORT = """
import json, sys, threading
import mq9, mq9.sync, mq9.cli
absent = []
for name in sys.argv[1:]:
    try:
        __import__(name)
    except ImportError:
        absent.append(name)
print(json.dumps({"file": mq9.__file__, "absent": absent, "threads": threading.active_count(),
                  "exports": sorted(mq9.__all__)}))
"""

PING_AGENT = """
from mq9 import Agent

agent = Agent("isolated", description="Runs from a venv with only the SDK")


@agent.skill
async def ping(text: str) -> str:
    return "pong " + text
"""


def _name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _closure(roots: set[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``roots`` need at run time (extras left out)."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        dist = importlib.metadata.distribution(name)
        seen[name] = dist
        todo += [_name(r) for r in dist.requires or [] if "extra ==" not in r]
    return list(seen.values())


def _run(*args: str | Path, **kwargs) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=240, **kwargs)
    assert proc.returncode == 0, f"{args[:4]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


async def test_sdk_installs_into_a_fresh_venv_without_the_broker(tmp_path: Path, sdk_broker):
    # 1. the distribution: built offline from a copy of sdk/ (the tree stays clean)
    source = tmp_path / "sdk"
    shutil.copytree(
        SDK_DIR, source, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__")
    )
    wheels = tmp_path / "wheels"
    pip_env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    bare_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--isolated", "--no-index", "--no-build-isolation",
         "--no-deps", source, "-w", wheels, env=pip_env)  # fmt: skip
    (wheel,) = wheels.glob("mq9-*.whl")

    # 2. a fresh venv that sees only the run-time closure of nats-py and pydantic
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    deps = tmp_path / "deps"
    deps.mkdir()
    for dist in _closure(ALLOWED):
        root = Path(dist.locate_file(""))
        for top in {f.parts[0] for f in dist.files or [] if not f.parts[0].startswith("..")}:
            if (root / top).exists() and not (deps / top).exists():
                (deps / top).symlink_to(root / top)
    (site / "only_sdk_deps.pth").write_text(str(deps) + "\n")

    # 3. install with no index: it succeeds only if every declared dependency is already there
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--isolated", "--no-index", wheel,
         env=pip_env)  # fmt: skip
    requires = importlib.metadata.Distribution.at(next(site.glob("mq9-*.dist-info"))).requires
    assert {_name(r) for r in requires or []} == ALLOWED

    # 4. import: nothing of the broker is importable, nothing starts on import
    report = json.loads(_run(python, "-c", CHECK_IMPORT, *BROKER_ONLY, cwd=tmp_path, env=bare_env))
    assert report["file"].startswith(str(site))
    assert report["absent"] == BROKER_ONLY
    assert report["threads"] == 1
    assert {"Agent", "Client", "TaskContext", "NoLiveAgent", "TaskFailed"} <= set(report["exports"])

    # 5. and it works: an agent run by the installed `mq9` command answers an invocation
    (tmp_path / "ping_agent.py").write_text(PING_AGENT)
    proc = subprocess.Popen(
        [venv / "bin" / "mq9", "run", "ping_agent:agent", "--servers", sdk_broker.nats_url],
        cwd=tmp_path, env=bare_env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        async with Client(sdk_broker.nats_url) as c:

            async def healthy() -> bool:
                try:
                    return (await c.agent_status("isolated"))["status"] == "healthy"
                except Exception:
                    return False  # not registered yet

            await wait_until(healthy, 60, interval=0.1)
            assert await c.invoke("isolated", {"text": "hi"}) == "pong hi"
    finally:
        proc.terminate()
        assert await asyncio.to_thread(proc.wait, 20) == 0
