"""A speech-to-text service: HTTP and WebSocket API over a compact CTC acoustic model."""

__version__ = "0.1.0"
