"""FP32 ONNX → FP16 ONNX with FP32 islands where the networks need them, validated before it is written.

The converter is deghost's own (onnxconverter-common's mixes FP16 and FP32 inputs on one Concat and
flushes small weights to 1e-7): every node computes in FP16 except the FP32 islands; a Cast is
inserted wherever a value crosses between the two, weights are stored once in the precision their
consumers use, and inputs and outputs stay float32 so the FP16 graph is a drop-in replacement.

FP32 islands (node names come from the PyTorch module path, e.g. `/convs.4/conv/MatMul`):
- the stage wrapper's own math (root scope: fusion, area pooling, latent_avg, the CAM, argmax):
  cheap, and `fused` stays exact;
- every per-sample vector op (float outputs of rank ≤ 2): StyleGAN2's style modulation and
  demodulation sums, the mapping network when present, pSp's style heads, linear layers;
- StyleGAN2 (generator, and EOGI's generator inside deghosting): the ToRGB layers (the image
  accumulates there) and the low-resolution layers, as NVIDIA's FP16 StyleGAN2 runs only the four
  highest resolutions in FP16;
- MAResU-Net's PAM and CAM attention, whose sums run over all H·W positions (65,536 at 1024²,
  beyond FP16's 65,504) and whose softmax takes an unscaled Gram matrix.

Validation runs on the CPU: `rounding_emulation` turns the FP16 graph into an FP32 one that rounds
every FP16 value to FP16, so overflow anywhere in the graph shows as Inf. A stage is refused
(ParityError / NonFiniteError, nothing written) when those outputs are not finite or differ from
the FP32 graph's ONNX Runtime outputs by more than `FP16_BOUNDS`. The TensorRT engine is then
checked against ONNX Runtime again (export/tensorrt.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deghost.presets import get_preset
from deghost.stages import Stage

from .onnx_export import (
    PROTOBUF_LIMIT,
    ParityError,
    compare,
    example_inputs,
    onnxruntime_session,
    publish,
    read_metadata,
    run_onnxruntime,
    set_metadata,
    staging,
    worst,
    write_onnx,
)

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)

# Bound on max|FP16 − FP32| / max|FP32| per float output (both on ONNX Runtime, FP16 emulated, see
# `rounding_emulation`), or on the fraction of differing labels. Measured on the tiny preset, untrained
# weights: encoder 2.5e-5, generator 2.0e-3, diffcam 4.5e-3 (the mask), suppressor 6.2e-4,
# deghosting 4.4e-3, face_parser 1.7e-4 of the labels; ffhq1024: generator 2.2e-3, suppressor 6.3e-4.
FP16_BOUNDS = {
    "encoder": 1e-2,
    "generator": 1e-2,
    "diffcam": 5e-2,  # the mask is min-max normalised by a small peak for untrained weights
    "suppressor": 1e-2,
    "deghosting": 2e-2,
    "face_parser": 1e-2,
}
STYLEGAN2_STAGES = ("generator", "deghosting")
FP16_RESOLUTIONS = 4  # NVIDIA's num_fp16_res: only the highest resolutions run in FP16
ALWAYS_FP32 = (re.compile(r"/(PAM|CAM)/"), re.compile(r"/to_rgbs?[.\d]*/"))
# Inputs that ONNX requires to be float32 whatever the node's type (Resize's scales).
FLOAT32_INPUTS = {"Resize": (2,), "Upsample": (1,)}
# One batch size suffices: the conversion changes no shape, and the FP32 graph's batch axis was
# validated at batch 1 and 3. ONNX Runtime runs FP16 on the CPU through inserted casts, ~4× slower.
FP16_VALIDATION_BATCHES = (1,)
WEIGHTLESS_ABOVE = 1024  # elements; smaller initializers (shape constants) stay, shape inference reads them


class NonFiniteError(RuntimeError):
    """An FP16 graph whose outputs hold NaN or Inf: it is refused."""


def _is_root_scope(name: str) -> bool:
    return name.startswith("/") and name.count("/") == 1


# A synthesis layer of StyleGAN2: a child of the generator, which is the stage graph's root (generator)
# or its first level (deghosting calls the layers of its generator itself): not, say, an RRDB's conv1.
SYNTHESIS_LAYER = re.compile(r"^(?:/[^/]+)?/(input|conv1|convs\.(\d+))/")


def _low_resolution_layer(name: str, image_size: int) -> bool:
    """StyleGAN2 synthesis layers below the FP16 resolutions (input and conv1 are 4²; convs.i is 8·2^(i//2))."""
    match = SYNTHESIS_LAYER.match(name)
    if match is None:
        return False
    resolution = 4 if match.group(2) is None else 8 << (int(match.group(2)) // 2)
    return resolution < image_size >> (FP16_RESOLUTIONS - 1)


def fp32_islands(model: onnx.ModelProto, stage: str, image_size: int, ranks: dict[str, int]) -> set[str]:
    """Names of the nodes that stay FP32 (see the module docstring for why each rule exists)."""
    islands = set()
    for node in model.graph.node:
        float_ranks = [ranks[o] for o in node.output if o in ranks]
        if (
            _is_root_scope(node.name)
            or (float_ranks and max(float_ranks) <= 2)
            or any(rule.search(node.name) for rule in ALWAYS_FP32)
            or (stage in STYLEGAN2_STAGES and _low_resolution_layer(node.name, image_size))
        ):
            islands.add(node.name)
    return islands


def _value_types(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """(element type, rank) of every value, from ONNX shape inference.

    Inference needs the weights' shapes, not their values: it runs on a copy that declares the
    large initializers as typed inputs, instead of copying a gigabyte of weights twice. A value of
    unknown shape counts as an activation (rank 4), not as a per-sample vector.
    """
    weights = [t for t in model.graph.initializer if np.prod(t.dims) > WEIGHTLESS_ABOVE]
    declared = {t.name for t in weights}
    light = helper.make_model(
        helper.make_graph(
            model.graph.node, model.graph.name,
            list(model.graph.input) + [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in weights],
            model.graph.output, [t for t in model.graph.initializer if t.name not in declared]),
        opset_imports=model.opset_import, ir_version=model.ir_version)
    inferred = onnx.shape_inference.infer_shapes(light, strict_mode=True)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    types = {
        v.name: (v.type.tensor_type.elem_type,
                 len(v.type.tensor_type.shape.dim) if v.type.tensor_type.HasField("shape") else 4)
        for v in values
    }
    types.update({t.name: (t.data_type, len(t.dims)) for t in model.graph.initializer})
    return types


def _inline_identities_and_constants(model: onnx.ModelProto) -> None:
    """Identity nodes → their input; float Constant nodes → initializers (so weights convert once)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    rename, kept = {}, []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
        elif (node.op_type == "Constant" and node.attribute[0].name == "value"
              and node.attribute[0].t.data_type == FLOAT):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    for node in kept:
        for index, name in enumerate(node.input):
            node.input[index] = rename.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)


def _to_fp16_array(array: np.ndarray) -> np.ndarray:
    # Clip instead of overflowing: a weight beyond ±65504 would otherwise become Inf.
    return np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16)


class _Converter:
    """Rewrites a graph in place: FP16 nodes except `islands`, with Casts where precisions meet."""

    def __init__(self, model: onnx.ModelProto, islands: set[str], float_values: set[str]):
        self.graph = model.graph
        self.islands = islands
        self.float_values = float_values  # float32 values of the original graph
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.precision = {}  # value → FLOAT16 once converted (absent: FLOAT)
        self.converted = {}  # (value, precision) → name of the value in that precision
        self.nodes = []

    def value_in(self, name: str, precision: int) -> str:
        if self.precision.get(name, FLOAT) == precision:
            return name
        key = (name, precision)
        if key not in self.converted:
            suffix = "fp16" if precision == FLOAT16 else "fp32"
            new = f"{name}__{suffix}"
            if name in self.initializers and precision == FLOAT16:
                array = _to_fp16_array(numpy_helper.to_array(self.initializers[name]))
                self.graph.initializer.append(numpy_helper.from_array(array, new))
            else:
                self.nodes.append(helper.make_node("Cast", [name], [new], to=precision, name=f"{new}/Cast"))
            self.precision[new] = precision
            self.converted[key] = new
        return self.converted[key]

    def convert_node(self, node: onnx.NodeProto) -> None:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise NotImplementedError(f"node {node.name} ({node.op_type}) has subgraphs; the FP16 converter "
                                      "handles flat graphs only")
        float_outputs = [o for o in node.output if o in self.float_values]
        float_inputs = [i for i in node.input if i in self.float_values]
        if node.op_type in ("Shape", "Size") or not (float_outputs or float_inputs):
            self.nodes.append(node)
            return
        precision = FLOAT if node.name in self.islands else FLOAT16
        keep = FLOAT32_INPUTS.get(node.op_type, ())
        if node.op_type != "Cast":  # a Cast takes any input type
            for index, name in enumerate(node.input):
                if name in self.float_values:
                    node.input[index] = self.value_in(name, FLOAT if index in keep else precision)
        if precision == FLOAT16:
            for attribute in node.attribute:
                if node.op_type == "Cast" and attribute.name == "to" and attribute.i == FLOAT:
                    attribute.i = FLOAT16
                elif attribute.name == "value" and attribute.t.data_type == FLOAT:  # ConstantOfShape
                    attribute.t.CopyFrom(numpy_helper.from_array(
                        _to_fp16_array(numpy_helper.to_array(attribute.t)), attribute.t.name))
            for name in float_outputs:
                self.precision[name] = FLOAT16
        self.nodes.append(node)

    def run(self) -> None:
        for node in list(self.graph.node):
            self.convert_node(node)
        for output in self.graph.output:  # float32 outputs, like the FP32 graph
            if self.precision.get(output.name, FLOAT) == FLOAT16:
                self._cast_output_back(output.name)
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)
        del self.graph.value_info[:]  # stale types; ONNX Runtime and TensorRT infer them again
        used = {name for node in self.nodes for name in node.input}
        kept = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)

    def _cast_output_back(self, name: str) -> None:
        internal = f"{name}__fp16"
        for node in self.nodes:
            node.output[:] = [internal if o == name else o for o in node.output]
            node.input[:] = [internal if i == name else i for i in node.input]
        self.nodes.append(helper.make_node("Cast", [internal], [name], to=FLOAT, name=f"{name}/Cast"))



def _prepare(model: onnx.ModelProto, stage: str, image_size: int) -> tuple[set[str], set[str]]:
    """Inline Identity and Constant nodes (in place); returns (FP32 island node names, float32 values)."""
    _inline_identities_and_constants(model)
    ranks = {name: rank for name, (elem_type, rank) in _value_types(model).items() if elem_type == FLOAT}
    return fp32_islands(model, stage, image_size, ranks), set(ranks)


def fp32_island_names(model: onnx.ModelProto, stage: str, image_size: int) -> set[str]:
    """Names of the nodes of an FP32 stage graph that its FP16 version keeps in FP32."""
    return _prepare(model, stage, image_size)[0]


def convert_to_fp16(model: onnx.ModelProto, stage: str, image_size: int) -> tuple[onnx.ModelProto, int]:
    """The FP16 graph of an FP32 stage graph (modified in place), and how many nodes stay FP32."""
    islands, float_values = _prepare(model, stage, image_size)
    converter = _Converter(model, islands, float_values)
    converter.run()
    onnx.checker.check_model(model, full_check=True)  # full: also every node's input types
    return model, len(islands)


def rounding_emulation(fp16_model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP32 graph computing what `fp16_model` computes: every FP16 value is rounded to FP16 explicitly.

    This is what the FP16 graph is validated on. ONNX Runtime's CPU provider runs an FP16 graph by
    casting to FP32 around each op, then drops the casts between consecutive ops: intermediate
    values keep FP32 precision and range, which would hide exactly the overflows looked for here.
    Each op still computes in FP32 (as TensorRT's FP16 kernels accumulate), its result is rounded.
    """
    fp16_values = {name for name, (elem_type, _) in _value_types(fp16_model).items() if elem_type == FLOAT16}
    model = onnx.ModelProto()
    model.CopyFrom(fp16_model)
    graph = model.graph
    for tensor in graph.initializer:
        if tensor.data_type == FLOAT16:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    nodes = []
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == FLOAT16:
                attribute.i = FLOAT
            elif attribute.name == "value" and attribute.t.data_type == FLOAT16:
                attribute.t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(attribute.t).astype(np.float32), attribute.t.name))
        nodes.append(node)
        for index, name in enumerate(node.output):
            if name in fp16_values:
                node.output[index] = f"{name}__exact"
                nodes.append(helper.make_node("Cast", [f"{name}__exact"], [f"{name}__half"], to=FLOAT16))
                nodes.append(helper.make_node("Cast", [f"{name}__half"], [name], to=FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def check_finite(stage: str, outputs: dict[str, np.ndarray]) -> None:
    bad = [name for name, value in outputs.items() if value.dtype.kind == "f" and not np.all(np.isfinite(value))]
    if bad:
        raise NonFiniteError(
            f"{stage}: the FP16 graph produces NaN/Inf in {', '.join(bad)}; it is not written. An FP16 value "
            "overflows (|x| > 65504): keep that layer in FP32 (export/fp16.py, ALWAYS_FP32) or build with "
            "--precision fp32."
        )


def convert_stage(fp32_path: Path, stage: Stage, target: Path, reference: dict[int, dict] | None = None,
                  batches: Sequence[int] = FP16_VALIDATION_BATCHES, bound: float | None = None) -> dict:
    """Write the validated FP16 graph of `fp32_path` at `target`; returns the validation record.

    `reference`: the FP32 graph's ONNX Runtime outputs per batch size (as `onnx_export.validate`
    returns them); computed here when not given. The FP16 graph is checked to load in ONNX Runtime
    and validated through its `rounding_emulation`.
    """
    bound = FP16_BOUNDS[stage.name] if bound is None else bound
    props = read_metadata(fp32_path)
    preset = get_preset(props.get("deghost.preset", "ffhq1024"))
    model, n_islands = convert_to_fp16(onnx.load(str(fp32_path)), stage.name, preset.image_size)
    set_metadata(model, {**props, "deghost.precision": "fp16", "deghost.fp32_nodes": str(n_islands)})

    feeds = example_inputs(stage, max(batches), seed=1)
    if reference is None or not all(b in reference for b in batches):
        session = onnxruntime_session(fp32_path)
        reference = {b: run_onnxruntime(session, {k: v[:b] for k, v in feeds.items()}) for b in batches}
    with staging(target) as staged:
        emulated = rounding_emulation(model)
        if emulated.ByteSize() > PROTOBUF_LIMIT:
            emulated = write_onnx(emulated, staged.with_name("emulated.onnx"))
        session = onnxruntime_session(emulated)
        write_onnx(model, staged)
        del model, emulated
        onnxruntime_session(staged)  # loads: the runtime may run it with ONNX Runtime
        per_batch = {}
        for batch in batches:
            outputs = run_onnxruntime(session, {k: v[:batch] for k, v in feeds.items()})
            check_finite(stage.name, outputs)
            per_batch[str(batch)] = compare(stage, reference[batch], outputs)
        measured = max(worst(errors) for errors in per_batch.values())
        if not measured <= bound:
            raise ParityError(f"{stage.name}: the FP16 graph differs from FP32 by {measured:.3g} (bound {bound:g}); "
                              "it is not written. Keep more of it in FP32 or build with --precision fp32.")
        publish(staged, target)
    return {"reference": "onnxruntime cpu fp32", "runtime": "onnxruntime cpu, every fp16 value rounded explicitly",
            "batches": list(batches), "errors": per_batch, "worst": measured, "bound": bound,
            "fp32_nodes": n_islands}
