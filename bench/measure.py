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
PARAMS_ENV = "BENCH_PARAMS"


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
        secrets: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """One loadgen run; its result dict.

        The params template and the API key travel in the environment, never in argv (a verify's
        params hold a real secret); `secrets` are masked in the command kept for the report.
        """
        template = orjson.dumps(params if mode == "http" else list(params)).decode()
        argv = [
            PYTHON, "-m", "bench.loadgen", "--mode", mode, "--target", target, "--method", method,
            "--params-env", PARAMS_ENV,
            "--connections", str(connections), "--inflight", str(inflight),
            "--warmup", str(self.warmup_s), "--duration", str(duration_s or self.duration_s),
            "--bursts", str(self.bursts), "--drain", "60" if mode == "burst" else "10",
        ]  # fmt: skip
        if server_pid:
            argv += ["--server-pid", str(server_pid)]
        if check is not None:
            argv += ["--check", orjson.dumps(check).decode()]
        env = {**os.environ, PARAMS_ENV: template}
        if api_key is not None:
            argv += ["--api-key-env", API_KEY_ENV]
            env[API_KEY_ENV] = api_key
        self.commands.setdefault(label, _shown(argv, template, secrets))
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"loadgen {label} failed: {err.decode()[-2000:]}")
        result: dict[str, Any] = orjson.loads(out)
        for secret in secrets:  # a leaking server must not put its leak into the report
            result["error_samples"] = [text.replace(secret, "********") for text in result["error_samples"]]
        return result


def _shown(argv: list[str], template: str, secrets: tuple[str, ...]) -> str:
    """The command as a reader would type it: secrets masked, long id lists elided, pids as PID."""
    for secret in secrets:
        template = template.replace(secret, "********")
    if len(template) > 200:
        template = template[:120] + " ... " + template[-40:]
    shown = [".venv/bin/python" if arg == PYTHON else arg for arg in argv]
    for index in range(1, len(shown)):
        if shown[index - 1] == "--server-pid":
            shown[index] = "PID"
    return f"{PARAMS_ENV}={shlex.quote(template)} " + shlex.join(shown)
