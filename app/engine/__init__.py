"""Scheduling: the dynamic batcher, the model runner thread, and the engine that ties them."""
