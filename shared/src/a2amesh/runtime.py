"""Process lifecycle shared by every service: logging, SIGTERM/SIGINT handling, and serving HTTP beside MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn

from a2amesh import tracing

T = TypeVar("T")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the task id when the record carries one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("task_id", "agent", "context_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "INFO", as_json: bool = False) -> None:
    """Configure the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the service, so one SIGTERM stops HTTP and MQTT together
    and the process exits 0 instead of re-raising the signal."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_server(app: Any, host: str, port: int, log_level: str = "warning", **options: Any) -> QuietServer:
    """A uvicorn server for `app` that the service's own stop event shuts down (`options`: more uvicorn settings,
    e.g. a2amesh.internal.tls_server_options)."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level.lower(), lifespan="on", timeout_graceful_shutdown=5, **options
    )
    return QuietServer(config)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (every service's image has it): the services spend much of their
    CPU in the event loop itself, moving small MQTT and HTTP messages, and uvloop does that work in C."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


STARTUP_SETTLE = 3.0
"""Seconds after start when a service has built what it serves with (app, servers, clients, first cards)."""


GC_THRESHOLDS = (10_000, 10, 10)
"""Python's cyclic collector runs a young collection every 700 net allocations by default (3.11). A service's
per-message objects (packets, models, rows) are freed by reference counting as soon as a message is done, so those
collections found almost nothing and still cost the task store an eighth of its CPU under load (0.5 s of about 4 s
over 24,000 events; `gc.callbacks`). Collecting every 10,000 allocations keeps cyclic garbage bounded (at most that
many young objects wait) for a fraction of the work."""


def release_startup_memory() -> None:
    """Give the OS back the heap that importing left free: glibc keeps freed blocks mapped, so a service would idle
    with its import-time garbage (6 MB of the task store's 75 MB, measured in `make bench`). Once before serving,
    and once more STARTUP_SETTLE seconds in, for what building the app, the servers and the first cards left.

    What survives is then frozen (`gc.freeze`): the modules, models and app a service holds for its whole life are
    never garbage, yet every full collection walked all of them again; on the task store, whose messages allocate
    fast, those collections were a fifth of its CPU under load (py-spy, `make bench`'s record scenario). Then the
    collector runs less often (GC_THRESHOLDS)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` until it returns; SIGTERM or SIGINT sets `stop`, and the process exits 0 (having exported
    its last spans, when tracing is on)."""
    tracing.start()
    release_startup_memory()

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.call_later(STARTUP_SETTLE, release_startup_memory)
        await main(stop)

    try:
        run_on_service_loop(runner())
    finally:
        tracing.shutdown()


def run_on_service_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the event loop the services use, for programs measured beside them (benchmark peers)."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as loop_runner:
        return loop_runner.run(coroutine)


async def serve_until(stop: asyncio.Event, server: QuietServer, *workers: Awaitable[None], grace: float = 8.0) -> None:
    """Serve HTTP and run background workers until `stop` is set, then stop the server and the workers together
    within `grace` seconds (what is left is cancelled), so SIGTERM ends the process inside its termination budget.
    If the server ends on its own (a port already taken), the service stops too instead of running headless."""
    server_task = asyncio.create_task(_serve_http(server))
    worker_tasks = [asyncio.ensure_future(worker) for worker in workers]
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({server_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    if server_task.done() and not stop.is_set():
        logging.getLogger(__name__).error(
            "HTTP server on port %s stopped unexpectedly; shutting down", server.config.port
        )
        stop.set()
    stop_task.cancel()
    server.should_exit = True
    await asyncio.wait([server_task, *worker_tasks], timeout=grace)  # workers drain after `stop`, beside HTTP
    for task in (server_task, *worker_tasks):
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception, SystemExit):
            await task
    if not server.started:
        raise SystemExit(1)


async def _serve_http(server: QuietServer) -> None:
    """`server.serve()`, ending like any task when uvicorn cannot start. uvicorn calls `sys.exit(1)` when its port
    is taken; a SystemExit escaping a task stops the event loop at once, before the workers have drained or the MQTT
    link has closed, and the loop's teardown then waited on tasks that never finished (one coordinator hung, one
    died of SIGSEGV). Ended here, `serve_until` shuts the service down in order and exits 1 itself."""
    with contextlib.suppress(SystemExit):
        await server.serve()
