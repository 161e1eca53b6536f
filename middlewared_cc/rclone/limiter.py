"""How many verifies and listings run at once. Its own module: the daemon needs it at start-up, the
rest of the rclone engine only on first use."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

DEFAULT_CONCURRENCY = 16


class VerifyLimiter:
    """At most ``limit`` verifies at once; the rest wait their turn. Owned by the caller (one per app)."""

    def __init__(self, limit: int = DEFAULT_CONCURRENCY) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit)
        self.running = 0

    async def __aenter__(self) -> Self:
        await self._semaphore.acquire()
        self.running += 1
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.running -= 1
        self._semaphore.release()
