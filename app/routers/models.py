"""GET /v1/models: the loaded model, in the OpenAI list shape with ASR details added."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.dependencies import get_engine
from app.engine.engine import Engine, EngineUnavailable
from app.schemas import ModelCard, ModelList

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request, engine: Engine = Depends(get_engine)) -> ModelList:
    """The model this server runs: name, vocabulary size, sample rate, parameters, precision, device,
    the decoders a request may choose and the one it gets by default."""
    recognizer = engine.recognizer
    if recognizer is None:
        raise EngineUnavailable(f"the service is {engine.state.value}")
    config = recognizer.config
    card = ModelCard(
        id=config.name,
        created=int(request.app.state.started_at),
        vocab_size=len(config.tokens),
        sample_rate=config.sample_rate,
        parameters=recognizer.num_parameters(),
        precision=recognizer.precision,
        device=recognizer.device,
        runtime=recognizer.runtime,
        trained=config.trained,
        frame_rate=config.frame_rate,
        decoders=["greedy", *(["beam"] if engine.lm else []), *(["attention"] if engine.has_second_pass else [])],
        default_decoder=engine.default_decoder_kind,
    )
    return ModelList(data=[card])
