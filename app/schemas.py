"""Response bodies of the HTTP API (they become the OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class WordOut(BaseModel):
    word: str
    start: float = Field(description="Start time in seconds from the beginning of the audio.")
    end: float = Field(description="End time in seconds.")
    confidence: float = Field(ge=0, le=1, description="Mean per-character probability of the word.")


class AlternativeOut(BaseModel):
    text: str
    score: float = Field(description="Total log-score of the hypothesis (acoustic + weighted LM + word scores).")


class TranscriptionResponse(BaseModel):
    text: str = Field(description="The transcript, lower-case words separated by single spaces.")
    duration: float = Field(description="Seconds of audio received.")
    words: list[WordOut]
    model: str = Field(description="Name of the model that transcribed the audio.")
    processing_ms: float = Field(description="Server time spent on the request, in milliseconds.")
    alternatives: list[AlternativeOut] | None = Field(
        None, description="With `alternatives=N` (beam search): the N best transcripts, best first."
    )


class StreamPartialOut(BaseModel):
    """``/stream``'s ``partial`` message: the utterance so far (it may still change)."""

    type: Literal["partial"] = "partial"
    text: str
    start: float = Field(description="Start of the utterance, in seconds from the start of the stream.")
    end: float = Field(description="End of the audio the partial covers, in seconds.")


class StreamFinalOut(BaseModel):
    """``/stream``'s ``final`` message: an utterance's transcript."""

    type: Literal["final"] = "final"
    text: str
    start: float = Field(description="Start of the utterance, in seconds from the start of the stream.")
    end: float = Field(description="End of the utterance, in seconds.")
    words: list[WordOut] = Field(description="The words with their times; empty without word_timestamps.")


class ErrorDetail(BaseModel):
    type: str
    message: str
    code: str | int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ServingPlanOut(BaseModel):
    """How the server serves the model: its settings with ``auto`` and ``0`` resolved."""

    device: str
    precision: str
    runtime: str
    batch_execution: str
    model_workers: int
    num_threads: int
    max_batch_size: int
    decoder: str
    stream_final_decoder: str
    stream_partial_decoder: str
    split: str
    second_pass_split: str
    max_wait_ms: float
    max_batch_samples: int
    max_queue_samples: int
    min_batch_fill: float
    batches_in_flight: int


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "asr-server"
    vocab_size: int
    sample_rate: int
    parameters: int
    precision: str
    device: str
    runtime: str
    trained: bool
    frame_rate: float
    decoders: list[str] = []
    default_decoder: str = "greedy"
    alias_of: str | None = None  # set on the entries of ASR_MODEL_ALIASES: the served model they name
    serving: ServingPlanOut | None = None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]
