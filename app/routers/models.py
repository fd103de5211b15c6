"""GET /v1/models: the loaded model and its aliases, in the OpenAI list shape with ASR details added."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.config import Settings
from app.dependencies import get_engine, get_settings
from app.engine.engine import Engine, EngineUnavailable
from app.routers.openai import model_names
from app.schemas import ModelCard, ModelList, ServingPlanOut

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(
    request: Request, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)
) -> ModelList:
    """The model this server runs: name, vocabulary size, sample rate, parameters, precision, device,
    the decoders a request may choose and the one it gets by default, and `serving`: how it is
    served, every `auto` and `0` setting resolved (device, runtime, workers, threads, batch limits,
    decoders). It comes first; the names
    OpenAI clients may also ask for (`ASR_MODEL_ALIASES`) follow, each with `alias_of` naming it."""
    described = engine.describe()
    model, plan = described.model, described.plan
    if model is None or plan is None:
        raise EngineUnavailable(f"the service is {described.state.value}")
    config = model.config
    card = ModelCard(
        id=config.name,
        created=int(request.app.state.started_at),
        vocab_size=len(config.tokens),
        sample_rate=config.sample_rate,
        parameters=model.parameters,
        precision=plan.precision,
        device=plan.device,
        runtime=plan.runtime,
        trained=config.trained,
        frame_rate=config.frame_rate,
        decoders=list(model.decoders),
        default_decoder=plan.decoder,
        serving=ServingPlanOut(**plan.describe()),
    )
    aliases = [card.model_copy(update={"id": name, "alias_of": card.id}) for name in model_names(settings, card.id)[1:]]
    return ModelList(data=[card, *aliases])
