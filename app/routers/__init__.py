"""HTTP and WebSocket surfaces, one module per API."""
