"""FastAPI dependencies: the settings and the engine of the running app.

They are coroutines so FastAPI calls them on the event loop, not on its thread pool.
"""

from __future__ import annotations

from fastapi import Request

from app.config import Settings
from app.engine.engine import Engine


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine
