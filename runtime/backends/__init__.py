"""Inference backends behind one small interface, and the choice between them (torch-free).

A backend runs one stage graph: `run(feeds) -> outputs`, both keyed by the tensor names of the stage
table (`deghost.stages`), which the manifest records per artifact. Three implementations:

- `onnxruntime.OnnxRuntimeBackend`: an ONNX graph on ONNX Runtime's CUDA provider where
  onnxruntime-gpu loads, else on the CPU.
- `tensorrt.TensorRTBackend`: a TensorRT plan, imported only when asked for, so this package works
  without TensorRT or a GPU.
- `openvino.OpenVinoBackend`: an ONNX graph on OpenVINO's CPU plugin, in fp32 or bf16 (the fastest
  CPU engine for these networks), imported only when asked for.

`open_backend(manifest, stage, "auto")` takes, in order: the stage's TensorRT engine where TensorRT
loads and the engine was built for this GPU and TensorRT version; ONNX Runtime on CUDA; on the CPU,
OpenVINO where it is installed, else ONNX Runtime. Each opened backend carries `why` it was chosen and
`runs_in` (the precision it computes in); `auto` never lowers precision unless asked (`precision="bf16"`
or `"fp16"`). OpenVINO keeps its compiled stages in a `compiled_cache` on disk.

A backend whose `concurrent` is True may run from several threads at once (ONNX Runtime; OpenVINO, one
infer request per thread over one compiled model); the Pipeline serialises the others (TensorRT).

Between two stages on a GPU, an output can stay on the device: `run(feeds, keep={"mask"})` returns
that output as a `DeviceTensor`, which the next stage accepts as a feed without a host round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from deghost.manifest import Artifact, Manifest, ManifestError, TensorInfo, build_command

if TYPE_CHECKING:
    from .compiled_cache import CompiledCache

log = logging.getLogger("deghost.runtime")

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino")
DEVICES = ("auto", "cpu", "cuda")  # auto: CUDA where a GPU backend loads, else the CPU
PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # auto: fp16 TensorRT engines as built, else fp32
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # ours → OpenVINO's INFERENCE_PRECISION_HINT
BACKEND_PRECISIONS = {"tensorrt": ("fp16", "fp32"), "onnxruntime": ("fp32", "fp16"),
                      "openvino": tuple(OPENVINO_PRECISIONS)}


class BackendError(RuntimeError):
    """A backend that cannot load or run: missing package, wrong feed, engine for another machine."""


@dataclass(frozen=True)
class DeviceTensor:
    """Rows of a C-contiguous [N,...] array in GPU memory, left there by one stage for the next.

    `pointer` is the device address of row 0 of the whole array `shape`; `rows` selects the rows
    this handle stands for (None: all of them), so taking rows costs no copy. `owner` keeps the
    memory alive. A tensor produced by a TensorRT backend lives in that backend's output buffer:
    it is valid until that backend runs again.
    """

    pointer: int
    shape: tuple[int, ...]
    dtype: np.dtype
    to_host: Callable[[], np.ndarray] = field(repr=False)  # copies the whole [N,...] array to the host
    owner: object = field(default=None, repr=False)
    rows: tuple[int, ...] | None = None

    @property
    def view_shape(self) -> tuple[int, ...]:
        return self.shape if self.rows is None else (len(self.rows), *self.shape[1:])

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def take(self, rows: Sequence[int]) -> DeviceTensor:
        """The same memory, restricted to `rows` (indices into this handle's rows)."""
        base = range(self.shape[0]) if self.rows is None else self.rows
        return DeviceTensor(self.pointer, self.shape, self.dtype, self.to_host, self.owner,
                            tuple(base[i] for i in rows))

    def row_runs(self) -> Iterator[tuple[int, int]]:
        """(first row, row count) of each run of consecutive rows, in order: one memcpy each."""
        rows = range(self.shape[0]) if self.rows is None else self.rows
        start, count = None, 0
        for row in rows:
            if start is not None and row == start + count:
                count += 1
                continue
            if start is not None:
                yield start, count
            start, count = row, 1
        if start is not None:
            yield start, count

    def numpy(self) -> np.ndarray:
        whole = self.to_host()
        return whole if self.rows is None else whole[list(self.rows)]


Feed = np.ndarray | DeviceTensor


class ManifestNames:
    """`input_names` / `output_names` as the manifest records them: the contract with the stage table."""

    artifact: Artifact

    @property
    def input_names(self) -> list[str]:
        return [info.name for info in self.artifact.inputs]

    @property
    def output_names(self) -> list[str]:
        return [info.name for info in self.artifact.outputs]


class Backend(Protocol):
    """One stage graph, ready to run."""

    stage: str
    kind: str  # "onnxruntime", "tensorrt" or "openvino"
    device: str  # "cpu" or "cuda": where `keep` leaves outputs
    artifact: Artifact
    max_batch: int | None  # the engine profile's largest batch; None when any batch runs
    runs_in: str  # the precision it computes in: the artifact's, or OpenVINO's inference precision
    why: str  # why this backend and precision were chosen ("" until open_backend says)
    concurrent: bool  # run() may be called from several threads at once

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    def run(self, feeds: dict[str, Feed], keep: Collection[str] = ()) -> dict[str, np.ndarray | DeviceTensor]:
        """Run the graph once. Outputs named in `keep` stay on the device (a DeviceTensor) where the
        backend has one; every other output comes back as a numpy array."""
        ...

    def close(self) -> None: ...


def check_graph_names(stage: str, graph_inputs: list[str], graph_outputs: list[str], expected_inputs: list[str],
                      expected_outputs: list[str]) -> None:
    """A loaded graph's input and output names must be the manifest's; BackendError otherwise."""
    if sorted(graph_inputs) != sorted(expected_inputs) or sorted(graph_outputs) != sorted(expected_outputs):
        raise BackendError(
            f"{stage}: the graph has inputs {graph_inputs} and outputs {graph_outputs}, the manifest "
            f"says {expected_inputs} → {expected_outputs}; re-export the stage"
        )


def check_feeds(artifact: Artifact, feeds: dict[str, Feed], max_batch: int | None = None) -> int:
    """The batch size B of `feeds`, after checking them against the artifact's inputs.

    Every input must be fed, nothing else; each feed must have the recorded shape ("B" = the same
    batch for all inputs, at least 1) and a dtype of the recorded kind (floating or integer).
    Raises BackendError naming the stage, the input, what came and what was expected.
    """
    expected = {info.name: info for info in artifact.inputs}
    missing, unknown = sorted(set(expected) - set(feeds)), sorted(set(feeds) - set(expected))
    if missing or unknown:
        raise BackendError(
            f"{artifact.stage}: feeds {sorted(feeds)} do not match the inputs {sorted(expected)}"
            + (f" (missing {missing})" if missing else "") + (f" (unknown {unknown})" if unknown else "")
        )
    batch = None
    for name, info in expected.items():
        value = feeds[name]
        shape = value.view_shape if isinstance(value, DeviceTensor) else np.shape(value)
        dtype = np.dtype(value.dtype)
        want_dtype = np.dtype(info.dtype)
        fits = len(shape) == len(info.shape) and all(
            size >= 1 if dim == "B" else size == dim for size, dim in zip(shape, info.shape, strict=True)
        )
        if not fits or dtype.kind != want_dtype.kind and not {dtype.kind, want_dtype.kind} <= {"i", "u"}:
            raise BackendError(
                f"{artifact.stage}: input '{name}' is {dtype} {tuple(shape)}; expected {info.dtype} "
                f"{_shape_text(info.shape)} (B = batch size, the same for every input)"
            )
        batch_here = shape[info.shape.index("B")] if "B" in info.shape else None
        if batch is not None and batch_here is not None and batch_here != batch:
            raise BackendError(
                f"{artifact.stage}: input '{name}' has batch {batch_here} but an earlier input has {batch}; "
                "feed every input with the same batch size"
            )
        batch = batch_here if batch is None else batch
    if batch is None:
        raise BackendError(f"{artifact.stage}: the manifest records no batch axis ('B') for any input")
    if max_batch is not None and batch > max_batch:
        raise BackendError(
            f"{artifact.stage}: batch {batch} is larger than the engine's profile allows ({max_batch}); "
            "run smaller batches or rebuild the engine with a larger maximum batch"
        )
    return batch


def host_feed(value: Feed, info: TensorInfo) -> np.ndarray:
    """A feed as a C-contiguous host array of the recorded dtype (copied only when it must be)."""
    array = value.numpy() if isinstance(value, DeviceTensor) else value
    return np.ascontiguousarray(array, dtype=np.dtype(info.dtype))


def _shape_text(shape: Sequence) -> str:
    return "[" + ",".join(str(dim) for dim in shape) + "]"


def tensorrt_backend_unavailable() -> str | None:
    """Why the TensorRT backend cannot open here (a sentence), or None when it can: the machine's TensorRT,
    cuda-python and GPU (`gpu_platform.tensorrt_platform_missing`), then the stream every stage shares."""
    from . import tensorrt

    return tensorrt.unavailable_reason()


def openvino_unavailable() -> str | None:
    """Why OpenVINO cannot run here (a sentence with the install command), or None when it can."""
    from . import openvino

    return openvino.unavailable_reason()


def onnxruntime_has_cuda() -> bool:
    from .onnxruntime import has_cuda_provider

    return has_cuda_provider()


def computes_in(backend: Backend) -> str:
    """The precision a backend computes in: its artifact's, or OpenVINO's inference precision."""
    return backend.runs_in


def open_backend(
    manifest: Manifest,
    stage: str,
    backend: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    memory_arena: bool = False,
    device: str = "auto",
    cache: CompiledCache | None = None,
) -> Backend:
    """The stage's graph, ready to run, on `backend` ("auto", "tensorrt", "onnxruntime" or "openvino").

    `device` ("auto", "cpu", "cuda") restricts where it runs: "cpu" never takes TensorRT or ONNX
    Runtime's CUDA provider, "cuda" refuses to fall back to the CPU. `precision` ("auto"/None,
    "fp32", "fp16", "bf16"): fp16 picks FP16 TensorRT engines or graphs, bf16 runs OpenVINO in bf16
    (stages whose recorded bf16 error is out of bound run fp32); auto = fp16 engines as built, else
    fp32. "auto" takes TensorRT when the manifest lists an engine that loads here, then ONNX Runtime
    on CUDA, then on the CPU OpenVINO where it is installed (the fastest CPU engine), else ONNX Runtime.
    The opened backend's `why` says why it was chosen. `threads`: CPU threads per operator (default:
    all cores). `memory_arena`: ONNX Runtime's CPU arena (see OnnxRuntimeBackend). `cache`: where OpenVINO
    keeps compiled stages (see compiled_cache; None: compiled in every process).
    Raises BackendError (or ManifestError) with the command that fixes it.
    """
    precision = precision or "auto"
    _check_choice(backend, device, precision)
    if backend == "auto":
        opened = _auto(manifest, stage, precision, threads, memory_arena, device, cache)
    elif backend == "tensorrt":
        opened, _ = _open_engine(manifest, _find(manifest, stage, "tensorrt", _or(precision, "fp16")), strict=True)
        if opened is None:
            raise BackendError(
                f"{stage}: TensorRT requested, but the manifest lists no TensorRT engine for it; build the engine "
                f"with {build_command(manifest.folder, [stage])}, or run with --backend onnxruntime"
            )
        opened.why = "asked for"
    elif backend == "openvino":
        opened = _open_openvino(manifest, stage, _or(precision, "fp32"), threads, cache)
        opened.why = "; ".join(filter(None, ["asked for", opened.why]))
    else:
        opened = _open_onnxruntime(manifest, stage, _or(precision, "fp32"), threads, memory_arena, device)
        opened.why = "asked for"
    log.debug("%s: %s/%s %s (%s)", stage, opened.kind, opened.device, computes_in(opened), opened.why)
    return opened


def _check_choice(backend: str, device: str, precision: str) -> None:
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if backend == "tensorrt" and device == "cpu" or backend == "openvino" and device == "cuda":
        raise BackendError(f"{backend} does not run on the {device.upper()}; choose another --backend or --device")
    if backend != "auto" and precision != "auto" and precision not in BACKEND_PRECISIONS[backend]:
        runs = [b for b, kinds in BACKEND_PRECISIONS.items() if precision in kinds]
        raise BackendError(f"{backend} does not run {precision}; {precision} runs on {' or '.join(runs)}")
    if backend == "auto" and precision == "bf16" and device == "cuda":
        raise BackendError("bf16 runs on the CPU (OpenVINO); on CUDA choose --precision fp16 or fp32")


def _or(precision: str, default: str) -> str:
    return default if precision == "auto" else precision


def _auto(manifest: Manifest, stage: str, precision: str, threads: int | None, memory_arena: bool,
          device: str, cache: CompiledCache | None) -> Backend:
    """The fastest backend that runs here at `precision` (see open_backend), with `why` set."""
    not_tensorrt = ""
    if device != "cpu" and precision != "bf16":
        engine = _find(manifest, stage, "tensorrt", _or(precision, "fp16"))
        opened, not_tensorrt = _open_engine(manifest, engine, strict=False)
        if opened is not None:
            opened.why = "engine built for this GPU"
            return opened
        if engine is not None:  # engines were built, yet cannot run here: worth more than an info line
            log.warning("%s: TensorRT engine %s not used: %s", stage, engine.file, not_tensorrt)
        if device == "cuda" or onnxruntime_has_cuda():  # "auto": CUDA, or the CPU with a warning if it fails
            opened = _open_onnxruntime(manifest, stage, _or(precision, "fp32"), threads, memory_arena, device)
            opened.why = f"no TensorRT engine here ({_short(not_tensorrt)})"
            if opened.device == "cpu":
                opened.why += "; ONNX Runtime's CUDA provider did not load"
            return opened
    not_openvino = openvino_unavailable() if precision != "fp16" else "fp16 graphs run on ONNX Runtime"
    if not_openvino is None:
        opened = _open_openvino(manifest, stage, _or(precision, "fp32"), threads, cache)
        opened.why = "; ".join(filter(None, ["fastest CPU backend installed", opened.why]))
        return opened
    if precision == "bf16":
        log.warning("%s: bf16 asked for, but %s; running ONNX Runtime in fp32", stage, not_openvino)
    opened = _open_onnxruntime(manifest, stage, "fp32" if precision == "bf16" else _or(precision, "fp32"),
                               threads, memory_arena, "cpu")
    opened.why = "; ".join(filter(None, [_short(not_openvino), "no GPU" if device != "cpu" else "CPU asked for"]))
    return opened


def _short(reason: str) -> str:
    """A reason cut to its first clause, for one cell of the choice table."""
    return reason.split(" (")[0].split(";")[0]


def _open_onnxruntime(manifest: Manifest, stage: str, precision: str, threads: int | None, memory_arena: bool,
                      device: str) -> Backend:
    graph = _graph(manifest, stage, precision)
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(manifest, graph, threads=threads, device=device, memory_arena=memory_arena)


def _open_openvino(manifest: Manifest, stage: str, precision: str, threads: int | None,
                   cache: CompiledCache | None) -> Backend:
    from .openvino import OpenVinoBackend

    return OpenVinoBackend(manifest, _graph(manifest, stage, "fp32"), precision, threads, cache)


def _graph(manifest: Manifest, stage: str, precision: str) -> Artifact:
    graph = _find(manifest, stage, "onnx", precision)
    if graph is None:
        raise ManifestError(
            f"{manifest.path} lists no ONNX graph for the '{stage}' stage; export it: "
            f"{build_command(manifest.folder, [stage])}"
        )
    return graph


def choice_table(backends: dict[str, Backend]) -> str:
    """stage → backend, device, precision, why: the lines `auto`'s choice is reported in, once per pipeline."""
    rows = [("stage", "backend", "device", "precision", "why")]
    rows += [(stage, b.kind, b.device, computes_in(b), b.why) for stage, b in backends.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4]
                     for row in rows)


def _open_engine(manifest: Manifest, engine: Artifact | None, strict: bool) -> tuple[Backend | None, str]:
    """(the engine's backend, "") or (None, why not); with `strict`, a refused engine raises its error.

    Refused: TensorRT or the GPU missing, an engine built for another platform, a plan file missing or
    changed since the build (ManifestError), or one TensorRT cannot load."""
    if engine is None:
        return None, "the manifest lists no TensorRT engine for it"
    reason = tensorrt_backend_unavailable()
    if reason is not None:
        if strict:
            raise BackendError(f"{engine.stage}: TensorRT requested, but {reason}; or run with --backend onnxruntime")
        return None, reason
    from . import tensorrt

    try:
        return tensorrt.TensorRTBackend(manifest, engine), ""
    except (BackendError, ManifestError) as error:
        if strict:
            raise
        return None, str(error)


def _find(manifest: Manifest, stage: str, kind: str, preferred: str) -> Artifact | None:
    """The artifact of `kind` for `stage` in the `preferred` precision, else in any precision."""
    return manifest.find(stage, kind, preferred) or manifest.find(stage, kind)
