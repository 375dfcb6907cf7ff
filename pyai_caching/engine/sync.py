"""One background event loop that runs the sync entry points.

`cached_agent_run_sync` must work from plain code and from inside a running event loop (a notebook), and must not
leak event loops or connections across calls. Running every sync call on one long-lived loop in a daemon thread
does all three: the caller's loop (if any) is never re-entered, and the stores' connection pools (one per event
loop) are reused from call to call.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _ensure_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="pyai_caching-sync", daemon=True)
            thread.start()
            _loop, _thread = loop, thread
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on the library's background loop and return its result (or raise its error)."""
    loop = _ensure_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("cached_agent_run_sync cannot be called from inside a cached call; await cached_agent_run")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def _shutdown() -> None:
    global _loop
    with _lock:
        loop, _loop = _loop, None
    if loop is None or loop.is_closed():
        return

    async def _close_stores() -> None:
        from pyai_caching.engine.registry import close_all

        await close_all()

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(_close_stores(), loop).result(timeout=2)
    loop.call_soon_threadsafe(loop.stop)


atexit.register(_shutdown)
