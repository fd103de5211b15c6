"""Servers the harness compares ours with: LitServe with batching, a naive one-at-a-time FastAPI
server, and a trivial endpoint that measures the load generator itself."""
