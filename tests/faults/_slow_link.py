"""A slow network link in front of a real `redis-server`: a TCP proxy with a bandwidth limit per direction.

```python
with SlowLink(server.port, bytes_per_second=4_000_000) as link:
    store = RedisStore(link.url())
```

The proxy runs its own event loop in a thread, so a busy test never slows it down (nor the other way round). Each
connection is limited on its own (TCP shares a real link between connections in about that way): a big value
crawls, a small reply on another connection passes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
CHUNK = 16 * 1024


class SlowLink:
    """A throttling TCP proxy from a free loopback port to `127.0.0.1:<upstream_port>`."""

    def __init__(self, upstream_port: int, *, bytes_per_second: float) -> None:
        self.upstream_port = upstream_port
        self.bytes_per_second = bytes_per_second
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port: int = probe.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="slow-link", daemon=True)
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the slow link did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, HOST, self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(HOST, self.upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pump(client_reader, server_writer), self._pump(server_reader, client_writer), return_exceptions=True
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                started = time.monotonic()
                writer.write(data)
                await writer.drain()
                wait = len(data) / self.bytes_per_second - (time.monotonic() - started)
                if wait > 0:
                    await asyncio.sleep(wait)
        finally:
            writer.close()
