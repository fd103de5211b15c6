"""Torch-free CPU serving of the default model: NumPy and ONNX Runtime only."""
