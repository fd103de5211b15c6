"""Prometheus metrics, defined once. Each app instance owns its registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
RATIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
RTF_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# The close codes RFC 6455 and the IANA registry define (1004 is reserved); clients may send others.
KNOWN_CLOSE_CODES = frozenset(range(1000, 1016)) - {1004}


def close_code_label(code: int) -> str:
    """The ``code`` label of a stream close: a known close code as itself, any other as ``other``
    (a client chooses its own close code, and labels must not grow without bound)."""
    return str(code) if code in KNOWN_CLOSE_CODES else "other"


class Metrics:
    """The service's metrics. Names carry their units; see docs/metrics in the README."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "asr_http_requests", "HTTP requests by route, method and status.", ["route", "method", "status"], registry=r
        )
        self.requests_in_progress = Gauge(
            "asr_http_requests_in_progress", "HTTP requests being handled (uploading, queued or running).", registry=r
        )
        self.request_duration = Histogram(
            "asr_http_request_duration_seconds", "HTTP request latency.", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.audio_processed = Counter("asr_audio_processed_seconds", "Seconds of audio transcribed.", registry=r)
        self.inference_duration = Histogram(
            "asr_inference_duration_seconds",
            "Model time per batch (features, network, decoding).",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram("asr_batch_size", "Items per model batch.", buckets=BATCH_BUCKETS, registry=r)
        self.batch_fill = Histogram(
            "asr_batch_fill_ratio", "Real audio over padded audio per batch.", buckets=RATIO_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "asr_queue_wait_seconds", "Time an item waits in the batch queue.", buckets=FAST_BUCKETS, registry=r
        )
        self.queue_items = Gauge("asr_queue_depth_items", "Items waiting in the batch queue.", registry=r)
        self.queue_audio = Gauge("asr_queue_depth_audio_seconds", "Audio seconds waiting in the queue.", registry=r)
        self.real_time_factor = Histogram(
            "asr_real_time_factor", "Processing time over audio duration per batch.", buckets=RTF_BUCKETS, registry=r
        )
        self.rejected = Counter("asr_rejected_requests", "Requests refused, by reason.", ["reason"], registry=r)
        self.errors = Counter("asr_errors", "Error responses by error type.", ["type"], registry=r)
        self.active_streams = Gauge("asr_active_streams", "Open WebSocket streams.", registry=r)
        self.first_partial = Histogram(
            "asr_stream_first_partial_seconds",
            "Stream start to first partial result.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_partial_latency = Histogram(
            "asr_stream_partial_latency_seconds",
            "Audio chunk that made a partial due, received, to that partial sent.",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.stream_finals = Counter("asr_stream_finals", "Utterance finals sent on streams.", registry=r)
        self.stream_closes = Counter(
            "asr_stream_closes", "Stream closes by WebSocket close code (unknown: other).", ["code"], registry=r
        )
        self.model_ready = Gauge("asr_model_ready", "1 when the model is loaded, warm and serving.", registry=r)
