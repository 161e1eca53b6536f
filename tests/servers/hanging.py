"""A TCP listener that accepts connections, reads them, and never answers: a server that hangs, for
timeouts and cancellation (verify, verify_all's abort)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass
class Hanging:
    port: int = 0
    open_connections: int = 0  # connections open now
    accepted: int = 0  # connections accepted since start


@asynccontextmanager
async def hanging_server() -> AsyncIterator[Hanging]:
    state = Hanging()
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        state.open_connections += 1
        state.accepted += 1
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        finally:
            state.open_connections -= 1

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        for writer in held:
            writer.close()
        server.close()
