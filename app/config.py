"""Service settings: one class, read from ``ASR_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.asr.options import MAX_PROMPT_CHARS

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "en-whisper-tiny"


class Settings(BaseSettings):
    """All tunables of the server. Every field can be set as ``ASR_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="ASR_", env_file=None, extra="ignore", protected_namespaces=())

    # Model
    model_path: Path = Field(DEFAULT_MODEL_PATH, description="Folder of the model bundle to serve.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model runs; auto picks CUDA if present."
    )
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto",
        description="Numeric precision; auto is fp16 on CUDA, and on CPU int8 for a Whisper network on "
        "runtime onnx, else fp32 (int8 needs runtime onnx).",
    )
    runtime: Literal["auto", "torch", "compile", "onnx"] = Field(
        "auto", description="How the network runs; auto is onnx on CPU and torch on CUDA (see docs/benchmarks.md)."
    )
    num_threads: int = Field(
        0, ge=0, description="CPU threads per model worker; 0: the cores shared among the workers (GPU: all cores)."
    )
    spin_wait: bool = Field(
        False,
        description="Let ONNX Runtime's CPU threads spin between operators: a little faster on an idle "
        "machine, but the spinning takes cycles from request handling (see docs/benchmarks.md).",
    )
    tune_malloc: bool = Field(
        True,
        description="Keep freed blocks under 32 MiB in glibc's heap for reuse, instead of returning them to "
        "the kernel and faulting them back in for the next utterance (see docs/benchmarks.md).",
    )
    warmup: bool = Field(True, description="Run dummy batches at start so the first request is not slow.")

    # HTTP server
    host: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")
    log_json: Literal["auto"] | bool = Field(
        "auto", description="One JSON object per log line: true, false (plain text), auto (plain on a terminal)."
    )
    shutdown_grace_s: float = Field(30.0, gt=0, description="Seconds to finish in-flight work after SIGTERM.")

    # HTTP connection limits (docs/security.md)
    max_connections: int = Field(
        1000, ge=1, description="Most open client connections; a new one past it gets 503 and is closed."
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="Largest request head (request line and headers) in bytes (431 past it)."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Time a connection has to send a complete request head before it is closed."
    )
    read_timeout_s: float = Field(
        30.0, gt=0, description="Longest pause between pieces of a request body before the connection is closed."
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, description="Idle time between requests before a connection is closed."
    )

    # Input limits
    max_upload_bytes: int = Field(
        100 * 1024 * 1024, gt=0, description="Largest accepted request body in bytes, for every transfer encoding."
    )
    max_audio_seconds: float = Field(
        1800.0,
        gt=0,
        description="Longest accepted audio in seconds; decoding stops at it. Each second held costs 64 KB "
        "(16 kHz float32), so this bounds a request's memory (docs/security.md).",
    )
    max_upload_memory_bytes: int = Field(
        512 * 1024 * 1024,
        gt=0,
        description="Request body bytes all requests together may hold at once; past it, 429. Keep it at least "
        "max_upload_bytes, or the largest uploads can never be taken.",
    )
    max_transcribing_audio_seconds: float = Field(
        3600.0,
        gt=0,
        description="Decoded upload audio, in seconds, that transcriptions in progress may hold at once (64 KB "
        "each); an upload past it gets 429. Keep it at least max_audio_seconds.",
    )
    max_concurrent_decodes: int = Field(
        2, ge=1, description="Uploads decoded at once; more wait their turn (bounds decoding memory)."
    )

    # Access control (docs/security.md)
    api_keys: str = Field(
        "", description="Comma-separated API keys; when set (or api_keys_file), every route but the probes needs one."
    )
    api_keys_file: Path | None = Field(
        None, description="File of API keys, one per line, each a key or 'sha256:<hex of the key>' (# comments)."
    )
    metrics_access: Literal["key", "open", "closed"] = Field(
        "key", description="/metrics: needs a key when keys are set (key), always open, or not served (closed)."
    )
    docs_access: Literal["key", "open", "closed"] = Field(
        "key", description="/docs, /redoc and /openapi.json: keyed like the API (key), always open, or not served."
    )
    demo_access: Literal["key", "open", "closed"] = Field(
        "key",
        description="The demo page (/ and /static): keyed like the API (key), open so that a browser can load it "
        "with keys set (its calls still need the key), or not served (closed).",
    )
    rate_limit_per_minute: float = Field(
        0.0, ge=0, description="Requests per minute per API key (or per client address without keys); 0: no limit."
    )
    rate_limit_burst: int = Field(20, ge=1, description="Requests a key may make at once above its steady rate.")
    cors_origins: str = Field(
        "",
        description="Comma-separated origins (https://app.example.com) allowed to call the API from a browser "
        "and to open WebSocket streams; the server's own origin is always allowed; '*' allows any.",
    )

    # Dynamic batching
    max_batch_size: int = Field(
        0, ge=0, description="Most utterances in one model batch; 0: 4 on CPU, 64 on GPU (see docs/benchmarks.md)."
    )
    batch_execution: Literal["auto", "padded", "per_item"] = Field(
        "auto",
        description="How the model runs a batch: as one zero-padded tensor, or item by item at each item's own "
        "length; auto is per_item on CPU (no padding: measured faster) and padded on GPU (see docs/benchmarks.md).",
    )
    max_wait_ms: float = Field(5.0, ge=0, description="How long the first item of a batch waits for company.")
    model_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Batches the model runs at once, each on its own thread; 0: one per core on CPU, "
        "one on GPU (see docs/benchmarks.md).",
    )
    max_batch_audio_seconds: float = Field(
        240.0, gt=0, description="Padded audio seconds per batch (batch size x longest item; padded batches only)."
    )
    min_batch_fill: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Least share of real (unpadded) audio in a batch; dissimilar lengths wait (padded batches only).",
    )
    max_queue_audio_seconds: float = Field(
        3600.0, gt=0, description="Audio seconds allowed to wait in the queue before answering 429."
    )
    request_timeout_s: float = Field(120.0, gt=0, description="Deadline for one request's inference (504 after it).")
    chunk_seconds: float = Field(
        20.0, gt=1, description="Recordings longer than this are cut into pieces of at most this length."
    )
    split: Literal["auto", "pauses", "length"] = Field(
        "auto",
        description="Where recordings longer than ASR_CHUNK_SECONDS are cut into pieces: at the speaker's pauses "
        "(Silero VAD; pieces of a few seconds or more) or by length alone; auto cuts at pauses for the CTC path "
        "(when Silero VAD is installed) and by length for the second pass.",
    )

    # Decoding
    decoder: Literal["auto", "greedy", "beam", "attention"] = Field(
        "auto",
        description="Default decoder of requests and stream finals; auto is the second pass (attention) when the "
        "model has one, else beam search when the bundle has a language model, else greedy.",
    )
    lm_path: Path | None = Field(
        None, description="Folder of the beam search LM (lm.bin, lexicon.txt); default: the bundle's lm/ folder."
    )
    prompt: str = Field(
        "",
        max_length=MAX_PROMPT_CHARS,
        description="Text the second pass reads before the audio of every request and stream final that gives no "
        "prompt of its own: a service's names and terms, spelled as they should come out.",
    )
    second_pass_beams: int | None = Field(
        None,
        ge=1,
        le=16,
        description="Hypotheses the second pass keeps per step (its CTC-guided beam search); default: the bundle's "
        "ctc_beams (4 for en-whisper-tiny). 1 runs as fast as Whisper's greedy decoding at a higher WER.",
    )
    second_pass_precision: Literal["auto", "fp32", "int8"] = Field(
        "auto",
        description="The second pass's arithmetic on the onnx runtime: int8 (integer matrix products, 0.55x the "
        "time of fp32 at the same dev-set WER: 15.7 % against 15.9 %) or fp32; auto is int8 on onnx and the "
        "model's own precision on PyTorch (which serves only that).",
    )

    # OpenAI compatibility (/v1/audio/transcriptions, /v1/realtime)
    model_aliases: str = Field(
        "whisper-1,gpt-4o-transcribe,gpt-4o-mini-transcribe",
        description="Comma-separated model names the OpenAI routes accept besides the served model's own; "
        "/v1/models lists them too.",
    )

    # Streaming (WS /stream)
    max_streams: int = Field(200, ge=1, description="Most concurrent WebSocket streams; beyond it, close 1013.")
    stream_max_message_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest WebSocket message a stream may send, in bytes (close 1009)."
    )
    stream_idle_timeout_s: float = Field(
        30.0, gt=0, description="Close a stream whose audio falls this many seconds behind the wall clock."
    )
    stream_max_speed: float = Field(
        4.0, ge=1, description="Fastest a stream's audio may arrive, as a multiple of real time (close 1008 past it)."
    )
    stream_burst_s: float = Field(
        5.0, ge=0, description="Audio seconds a stream may send ahead of stream_max_speed (e.g. a buffered start)."
    )
    max_streams_per_key: int = Field(
        0, ge=0, description="Most concurrent streams per API key (or client address without keys); 0: no limit."
    )
    stream_max_session_s: float = Field(3 * 3600.0, gt=0, description="Longest a stream may stay open, in seconds.")
    stream_silence_ms: int = Field(600, ge=100, description="Default silence that ends an utterance, in ms.")
    stream_max_silence_ms: int = Field(5000, ge=100, description="Largest silence_ms a client may ask for.")
    stream_max_utterance_s: float = Field(15.0, gt=1, description="Default longest utterance before a forced final.")
    stream_max_utterance_limit_s: float = Field(60.0, gt=1, description="Largest max_utterance_s a client may ask.")
    stream_partial_interval_s: float = Field(
        0.5, gt=0, description="New audio, in seconds, between a stream's model steps (and partials)."
    )
    stream_final_decoder: Literal["auto", "greedy", "beam", "attention"] = Field(
        "auto",
        description="Decoder of stream finals; auto is ASR_DECODER's choice (the second pass for the default model). "
        "beam serves several times more streams per core (docs/benchmarks.md).",
    )
    stream_partial_decoder: Literal["auto", "greedy", "beam"] = Field(
        "auto",
        description="Decoder of stream partials: beam search with the LM (its beam capped at "
        "ASR_STREAM_PARTIAL_BEAM_SIZE) or greedy; auto is beam when the model has an LM. Greedy partials are "
        "cheaper and less accurate (docs/benchmarks.md).",
    )
    stream_partial_beam_size: int = Field(
        16,
        ge=1,
        le=256,
        description="Largest beam of a partial's beam search (each partial decodes the utterance so far).",
    )
    stream_vad: Literal["silero", "energy"] = Field(
        "silero",
        description="What tells speech from silence for stream endpointing: Silero VAD (a trained model, robust "
        "to noise) or frame energy against ASR_STREAM_SILENCE_DB.",
    )
    stream_vad_threshold: float = Field(
        0.5, gt=0, lt=1, description="Silero speech probability that starts speech (it ends 0.15 below)."
    )
    stream_silence_db: float = Field(
        -45.0, le=0, description="With ASR_STREAM_VAD=energy: frame energy (dBFS) below which audio is silence."
    )
    stream_max_context_s: float = Field(
        1.0,
        ge=0,
        description="Context per side of a stream's partial windows (s); 0: the model's whole receptive field. "
        "Finals are one pass over the whole utterance either way.",
    )
