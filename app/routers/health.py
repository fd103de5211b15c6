"""Probes and metrics: liveness, readiness, Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.dependencies import get_engine
from app.engine.engine import Engine

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: answers 200 while the process serves HTTP at all."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Loading, draining or failed."}})
async def readyz(engine: Engine = Depends(get_engine)) -> JSONResponse:
    """Readiness: 200 once the model is loaded and warm and the batcher runs; 503 before, while
    draining for shutdown, and if the model failed to load."""
    described = engine.describe()
    body: dict[str, str] = {"status": described.state.value}
    if described.error:
        body["error"] = "model failed to load; see the server log"
    return JSONResponse(body, status_code=200 if described.ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the service's metrics."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
