"""ONNX export of every stage and FP16 TensorRT engine building."""
