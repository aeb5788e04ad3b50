"""Torch-free runtime: chains the exported engines (TensorRT or ONNX Runtime) with seamlessClone."""

# First, before anything imports cv2: caps OpenCV's decoders at the runtime's pixel limit (see limits.py).
from . import limits as _limits  # noqa: E402, F401
