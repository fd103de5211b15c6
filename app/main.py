"""The app factory, its lifespan, and the ``asr-serve`` entry point."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.access import AccessMiddleware
from app.api_keys import KeyRing
from app.config import Settings
from app.engine.engine import Engine, EngineState, RecognizerFactory, load_recognizer
from app.engine.streaming import StreamRegistry
from app.errors import install_error_handlers
from app.http_limits import LISTEN_BACKLOG, http_limits, limited_protocol, raise_fd_limit
from app.logs import configure_logging
from app.metrics import Metrics
from app.middleware import BodyLimitMiddleware, RequestContextMiddleware
from app.origins import cors_options
from app.routers import demo, docs, health, models, openai, realtime, stream, transcribe

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load and warm the model in the background (readiness says when), drain on shutdown."""
    engine: Engine = app.state.engine
    loading = asyncio.create_task(engine.start(), name="model-load")
    loading.add_done_callback(lambda task: _on_loaded(app, task))
    app.state.loading = loading
    try:
        yield
    finally:
        engine.begin_drain()
        await app.state.streams.drain(shutdown_time_left(app))  # finals, then close 1001
        if not loading.done():
            loading.cancel()
        await asyncio.gather(loading, return_exceptions=True)
        try:
            await asyncio.wait_for(engine.stop(), max(1.0, shutdown_time_left(app)))
            logger.info("shut down cleanly")
        except TimeoutError:
            logger.error("grace period over with work still queued; stopping anyway")


def shutdown_time_left(app: FastAPI) -> float:
    """Seconds left of the grace period, which starts at the first shutdown signal (or now)."""
    if getattr(app.state, "shutdown_deadline", None) is None:
        app.state.shutdown_deadline = time.monotonic() + app.state.settings.shutdown_grace_s
    return max(0.0, float(app.state.shutdown_deadline) - time.monotonic())


def _on_loaded(app: FastAPI, task: asyncio.Task[None]) -> None:
    if task.cancelled() or task.exception() is None:
        return
    on_fatal = getattr(app.state, "on_fatal", None)
    if on_fatal is not None:
        on_fatal()


def create_app(settings: Settings | None = None, recognizer_factory: RecognizerFactory = load_recognizer) -> FastAPI:
    """Build the service: routers, error handlers, middleware, and the engine it will start."""
    settings = settings or Settings()
    app = FastAPI(
        title="ASR server",
        version=__version__,
        description="Speech-to-text over HTTP: upload audio, get a transcript with word times.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from app.routers.docs, with their scripts served here
        redoc_url=None,
    )
    docs_paths = [*docs.install_docs(app), app.openapi_url or "/openapi.json"]
    metrics = Metrics()
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.engine = Engine(settings, metrics, recognizer_factory)
    app.state.streams = StreamRegistry(settings.max_streams, metrics)
    app.state.started_at = time.time()
    app.state.decode_slots = asyncio.Semaphore(settings.max_concurrent_decodes)  # bounds decoding memory
    install_error_handlers(app)
    # The last added runs first: CORS answers preflights, the request context gives every request
    # an id and counts it, then access control admits or refuses before any route runs.
    keys = KeyRing.from_settings(settings)
    logger.info("API keys: %s", f"{len(keys.digests)} accepted" if keys.enabled else "none (every route is open)")
    app.add_middleware(AccessMiddleware, settings=settings, metrics=metrics, keys=keys, docs_paths=docs_paths)
    app.add_middleware(  # 413 while reading; 429 past the bytes all uploads may hold at once
        BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, max_total_bytes=settings.max_upload_memory_bytes
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    app.add_middleware(CORSMiddleware, **cors_options(settings))
    for router in (transcribe.router, openai.router, stream.router, models.router, health.router, demo.router):
        app.include_router(router)
    app.include_router(realtime.router)  # OpenAI's Realtime transcription API (WS /v1/realtime)
    demo.mount_static(app)
    return app


class _Server(uvicorn.Server):
    """uvicorn's server, but SIGTERM first turns readiness off and refuses new work."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self.failed = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.state.engine.begin_drain()
        # Live streams first get their finals and a 1001 close (uvicorn would close them with 1012);
        # a second signal during that exits at once.
        streams: StreamRegistry = self._app.state.streams
        left = shutdown_time_left(self._app)  # the whole shutdown shares one grace period
        if not self.should_exit and streams.drain_soon(lambda: self.handle_exit(sig, frame), left):
            return
        self.config.timeout_graceful_shutdown = max(1, int(shutdown_time_left(self._app)))
        super().handle_exit(sig, frame)
        # A graceful stop is the expected end: exit 0 instead of re-raising the signal afterwards.
        self._captured_signals.clear()

    def fatal(self) -> None:
        logger.error("model failed to load; exiting")
        self.failed = True
        self.should_exit = True


def serve(settings: Settings | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; returns the process exit code."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    metrics: Metrics = app.state.metrics
    limits = http_limits(settings, raise_fd_limit(), lambda reason: metrics.rejected.labels(reason=reason).inc())
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=limited_protocol(limits),  # httptools plus head size, timeouts and the connection limit
        backlog=LISTEN_BACKLOG,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        ws_max_size=16 * 1024 * 1024,
    )
    server = _Server(config, app)
    app.state.on_fatal = server.fatal
    server.run()
    engine: Engine = app.state.engine
    return 1 if server.failed or engine.state is EngineState.FAILED else 0


def main() -> None:
    raise SystemExit(serve())
