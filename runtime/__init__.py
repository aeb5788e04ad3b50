"""Torch-free runtime: chains the exported engines (TensorRT or ONNX Runtime) with seamlessClone."""
