"""How far an FP16 graph may stray from its FP32 original, from first principles (not from the build's own
bounds): the tolerance the FP16 tests hold ONNX Runtime's emulation and TensorRT's engines to."""

from __future__ import annotations

import math

import onnx

from deghost.export import fp16


def fp16_tolerance(model: onnx.ModelProto, outputs: int) -> float:
    """Largest expected |FP16 − FP32| over `outputs` values, relative to the output's scale, from first principles:
    every op computing in FP16 rounds its result, and every FP16 weight was rounded, by about u = 2⁻¹¹ of its
    magnitude with a random sign (the ops accumulate in FP32); these add up like a random walk over the n
    roundings, to sqrt(n)·u, and the largest of N outputs lies within sqrt(2·ln N) standard deviations."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    rounding_ops = sum(1 for node in model.graph.node
                       if node.op_type != "Cast" and any(types.get(o) == fp16.FLOAT16 for o in node.output))
    rounded_weights = sum(1 for tensor in model.graph.initializer if tensor.data_type == fp16.FLOAT16)
    return math.sqrt(2 * math.log(outputs)) * math.sqrt(rounding_ops + rounded_weights) * 2.0**-11
