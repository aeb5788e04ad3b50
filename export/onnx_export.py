"""One stage graph → one validated ONNX file: trace, name, annotate, check, compare, publish.

The graph is traced (TorchScript exporter, `dynamo=False`) at batch 2, so no batch-1 special case
(a squeeze, a broadcast) is baked into the graph, with every input and output named after the stage
table and a dynamic batch axis "B". The file carries its provenance in `metadata_props` and is one
self-contained protobuf; only a graph above protobuf's 2 GB limit (no deghost stage comes near:
the largest, the pSp encoder at 1024, is 1.07 GB) gets its weights in `<file>.data` beside it.

Nothing is published before ONNX Runtime (CPU) reproduces PyTorch within the stage's bound
(`PARITY_BOUNDS`) at batch 1 and 3: files are written in a private staging folder beside the
target and moved into place by rename, so a failed or interrupted export leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from deghost import __version__
from deghost.attributes import ATTRIBUTES
from deghost.files import disk_full_reported
from deghost.stages import BATCH, Stage

if TYPE_CHECKING:  # torch is imported where a graph is traced or run, so the build's --help stays fast
    from torch import nn

log = logging.getLogger("deghost.export")

OPSET = 17
TRACE_BATCH = 2  # not 1: a batch-1 trace can fold size-1 broadcasts into the graph
VALIDATION_BATCHES = (1, 3)
PROTOBUF_LIMIT = 2**31 - 1  # bytes; a larger ModelProto cannot be serialised in one piece

# Bound on max|ONNX Runtime − PyTorch| / max|PyTorch| per float output (scale-relative, so one number
# serves images, latents and logits). Measured, untrained weights: at most 4e-6 on the tiny preset
# (generator, diffcam mask); generator 7e-6, suppressor 2.4e-7 on ffhq1024.
# The mask is min-max normalised per image, which divides by a small peak for untrained weights.
PARITY_BOUNDS = {
    "encoder": 1e-5,
    "generator": 2e-5,
    "diffcam": 5e-5,
    "suppressor": 1e-5,
    "deghosting": 2e-5,
    "face_parser": 5e-4,  # labels: fraction of pixels whose argmax differs (near-ties flip)
}


class ParityError(RuntimeError):
    """An exported graph whose ONNX Runtime outputs differ from PyTorch's beyond the stage's bound."""


def example_inputs(stage: Stage, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs in each tensor's range: images in [-1,1], masks in [0,1], class indices of the attributes.

    One random stream per input, so the inputs at batch b are the first b samples of those at any larger batch.
    """
    classes = [a.class_index for a in ATTRIBUTES.values()]
    feeds = {}
    for index, spec in enumerate(stage.inputs):
        rng = np.random.default_rng([seed, index])
        shape = spec.concrete_shape(batch)
        if spec.dtype == "int64":
            feeds[spec.name] = np.array([classes[i % len(classes)] for i in range(batch)], dtype=np.int64)
        elif spec.name == "mask":
            feeds[spec.name] = rng.random(shape, dtype=np.float32)
        elif spec.name == "w":
            feeds[spec.name] = rng.standard_normal(shape, dtype=np.float32)
        else:
            feeds[spec.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return feeds


def run_torch(graph: nn.Module, stage: Stage, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        outputs = graph(*(torch.from_numpy(feeds[name]) for name in stage.input_names()))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return {name: out.numpy() for name, out in zip(stage.output_names(), outputs, strict=True)}


def onnxruntime_session(model: str | Path | onnx.ModelProto):
    """A CPU session for an ONNX file, or for a model in memory (below 2 GB)."""
    import onnxruntime

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])


def run_onnxruntime(session, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def metadata(stage: Stage, preset: str, source: str, precision: str = "fp32") -> dict[str, str]:
    """The provenance every deghost ONNX file carries (read it with onnx.load(...).metadata_props)."""
    def describe(specs):
        return [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype, "meaning": s.meaning} for s in specs]

    return {
        "deghost.stage": stage.name,
        "deghost.preset": preset,
        "deghost.source": source,
        "deghost.version": __version__,
        "deghost.precision": precision,
        "deghost.inputs": json.dumps(describe(stage.inputs)),  # shapes and value ranges
        "deghost.outputs": json.dumps(describe(stage.outputs)),
    }


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def read_metadata(path: str | Path) -> dict[str, str]:
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def data_file(path: Path) -> Path:
    return path.with_name(path.name + ".data")


def write_onnx(model: onnx.ModelProto, path: Path, external_above: int = PROTOBUF_LIMIT) -> Path:
    """Save `model` as one file, or with its weights in `<path>.data` when it exceeds `external_above` bytes.
    A disk that fills up raises DiskFullError (the caller's staging folder holds the partial files)."""
    with disk_full_reported(path, [path, data_file(path)]):
        if model.ByteSize() > external_above:
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_file(path).name, size_threshold=1024)
        else:
            path.write_bytes(model.SerializeToString())
    onnx.checker.check_model(str(path))  # from the path: also works above 2 GB
    return path


@contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A private folder beside `target` (same file system, so `publish` is a rename); removed on exit."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as folder:
        yield Path(folder) / target.name


def publish(staged: Path, target: Path) -> Path:
    """Move a staged ONNX file (weights file first, if any) onto `target` atomically."""
    if data_file(staged).exists():
        os.replace(data_file(staged), data_file(target))
    else:
        data_file(target).unlink(missing_ok=True)  # a stale one from an earlier, larger graph
    os.replace(staged, target)
    return target


def trace(graph: nn.Module, stage: Stage, path: Path, props: dict[str, str], opset: int = OPSET) -> Path:
    """Export `graph` (inputs and outputs in the stage table's order) to `path`, annotated and checked."""
    import torch

    graph.eval()  # the exporter otherwise records BatchNorm and Dropout in training mode
    example = tuple(torch.from_numpy(a) for a in example_inputs(stage, TRACE_BATCH).values())
    raw = path.with_name(path.name + ".traced")
    with torch.no_grad(), warnings.catch_warnings(record=True) as exporter_warnings:
        # The exporter's warnings concern its own choices (shape assertions frozen at trace time,
        # as intended; strided slices left unfolded; its deprecation): nothing a user did or can
        # fix, and the batch-1 and batch-3 comparisons prove the graph. Kept at debug level.
        warnings.simplefilter("always")
        torch.onnx.export(
            graph,
            example,
            str(raw),
            input_names=stage.input_names(),
            output_names=stage.output_names(),
            dynamic_axes={name: {0: BATCH} for name in stage.input_names() + stage.output_names()},
            opset_version=opset,
            dynamo=False,
            training=torch.onnx.TrainingMode.EVAL,
            do_constant_folding=True,
            keep_initializers_as_inputs=False,
            export_modules_as_functions=False,
        )
    for caught in {(w.category.__name__, str(w.message)): None for w in exporter_warnings}:
        log.debug("%s exporter %s: %s", stage.name, *caught)
    spilled = [f for f in path.parent.iterdir() if f != raw]
    if spilled:  # above 2 GB the exporter writes one file per weight: gather them into <file>.data
        model = onnx.load(str(raw))
        set_metadata(model, props)
        write_onnx(model, path)
        for leftover in spilled:
            leftover.unlink()
        raw.unlink()
        return path
    append_metadata(raw, props)
    raw.replace(path)
    onnx.checker.check_model(str(path))
    return path


def append_metadata(path: Path, props: dict[str, str]) -> None:
    """Add metadata_props to a serialised model without parsing it (a 1 GB graph takes seconds to re-write).

    Concatenated protobuf messages merge, with repeated fields appended, so appending a ModelProto
    holding only metadata_props to the file adds those entries.
    """
    extra = onnx.ModelProto()
    for key, value in props.items():
        extra.metadata_props.add(key=key, value=value)
    with open(path, "ab") as handle:
        handle.write(extra.SerializeToString())


def compare(stage: Stage, reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per output: max abs and scale-relative error (float), or the fraction of differing labels (int)."""
    errors = {}
    for spec in stage.outputs:
        want, have = reference[spec.name], got[spec.name]
        if want.shape != have.shape:
            raise ParityError(f"{stage.name}: output {spec.name} has shape {have.shape}, expected {want.shape}")
        if spec.dtype == "int64":
            errors[spec.name] = {"mismatch_fraction": float(np.mean(want != have))}
            continue
        have = have.astype(np.float64)
        finite = bool(np.all(np.isfinite(have)))
        max_abs = float(np.max(np.abs(want - have))) if finite else float("inf")
        scale = float(np.max(np.abs(want)))
        errors[spec.name] = {"max_abs": max_abs, "max_rel": max_abs / scale if scale > 0 else max_abs}
    return errors


def worst(errors: dict[str, dict]) -> float:
    return max(e.get("max_rel", e.get("mismatch_fraction")) for e in errors.values())


def validate(path: Path, graph: nn.Module, stage: Stage, batches: Sequence[int] = VALIDATION_BATCHES,
             bound: float | None = None) -> tuple[dict, dict[int, dict[str, np.ndarray]]]:
    """Compare ONNX Runtime (CPU) with PyTorch at each batch size; raise ParityError beyond `bound`.

    PyTorch runs once at the largest batch; smaller batches are its leading samples (the graphs are
    in eval mode, so samples do not interact). Returns the validation record for the manifest and
    the ONNX Runtime outputs per batch (the reference of the FP16 graph).
    """
    bound = PARITY_BOUNDS[stage.name] if bound is None else bound
    feeds = example_inputs(stage, max(batches), seed=1)
    reference = run_torch(graph, stage, feeds)
    session = onnxruntime_session(path)
    per_batch, outputs = {}, {}
    for batch in batches:
        head = {name: value[:batch] for name, value in feeds.items()}
        outputs[batch] = run_onnxruntime(session, head)
        per_batch[str(batch)] = compare(stage, {k: v[:batch] for k, v in reference.items()}, outputs[batch])
    measured = max(worst(errors) for errors in per_batch.values())
    record = {"reference": "pytorch fp32", "runtime": "onnxruntime cpu", "batches": list(batches),
              "errors": per_batch, "worst": measured, "bound": bound}
    if not measured <= bound:
        raise ParityError(
            f"{stage.name}: ONNX Runtime differs from PyTorch by {measured:.3g} (bound {bound:g}; errors "
            f"{json.dumps(per_batch)}). The graph is not published. An operation exports differently from "
            "how it runs in PyTorch: compare intermediate outputs with polygraphy or onnxruntime."
        )
    return record, outputs


def export_stage(graph: nn.Module, stage: Stage, target: Path, props: dict[str, str],
                 batches: Sequence[int] = VALIDATION_BATCHES, bound: float | None = None) -> tuple[dict, dict]:
    """Trace, check and validate `graph`, then publish it at `target`; (validation record, ORT outputs)."""
    with staging(target) as staged:
        trace(graph, stage, staged, props)
        record, outputs = validate(staged, graph, stage, batches, bound)
        publish(staged, target)
    return record, outputs
