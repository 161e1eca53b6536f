"""Running bench.loadgen as a separate process and keeping the exact commands for the report."""

from __future__ import annotations

import asyncio
import os
import shlex
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.procs import PYTHON, ROOT

API_KEY_ENV = "BENCH_API_KEY"


@dataclass
class Measurer:
    """Timing settings shared by every load run, and the first command used for each label."""

    warmup_s: float
    duration_s: float
    bursts: int
    commands: dict[str, str] = field(default_factory=dict)

    async def load(
        self,
        label: str,
        target: str,
        method: str,
        params: Any = (),
        *,
        mode: str = "rpc",
        connections: int = 64,
        inflight: int = 1,
        server_pid: int | None = None,
        api_key: str | None = None,
        check: Any = None,
        duration_s: float | None = None,
    ) -> dict[str, Any]:
        """One loadgen run; its result dict. The API key travels in the environment, never in argv."""
        argv = [
            PYTHON, "-m", "bench.loadgen", "--mode", mode, "--target", target, "--method", method,
            "--params", orjson.dumps(params if mode == "http" else list(params)).decode(),
            "--connections", str(connections), "--inflight", str(inflight),
            "--warmup", str(self.warmup_s), "--duration", str(duration_s or self.duration_s),
            "--bursts", str(self.bursts), "--drain", "60" if mode == "burst" else "10",
        ]  # fmt: skip
        if server_pid:
            argv += ["--server-pid", str(server_pid)]
        if check is not None:
            argv += ["--check", orjson.dumps(check).decode()]
        env = dict(os.environ)
        if api_key is not None:
            argv += ["--api-key-env", API_KEY_ENV]
            env[API_KEY_ENV] = api_key
        self.commands.setdefault(label, _shown(argv))
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"loadgen {label} failed: {err.decode()[-2000:]}")
        result: dict[str, Any] = orjson.loads(out)
        return result


def _shown(argv: list[str]) -> str:
    """The command as a reader would type it (long id lists elided, pids left as placeholders)."""
    shown = [".venv/bin/python" if arg == PYTHON else arg for arg in argv]
    for index, arg in enumerate(shown):
        if len(arg) > 200:
            shown[index] = arg[:120] + " ... " + arg[-40:]
        if index and shown[index - 1] == "--server-pid":
            shown[index] = "PID"
    return shlex.join(shown)
