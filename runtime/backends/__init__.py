"""Inference backends behind one small interface, and the choice between them (torch-free).

A backend runs one stage graph: `run(feeds) -> outputs`, both keyed by the tensor names of the stage
table (`deghost.stages`), which the manifest records per artifact. Two implementations:

- `onnxruntime.OnnxRuntimeBackend`: an ONNX graph on ONNX Runtime's CUDA provider where
  onnxruntime-gpu loads, else on the CPU.
- `tensorrt.TensorRTBackend`: a TensorRT plan, imported only when asked for, so this package works
  without TensorRT or a GPU.

`open_backend(manifest, stage, "auto")` takes the stage's TensorRT engine where TensorRT loads and the
engine was built for this GPU and TensorRT version, else its ONNX graph, and logs the choice.

Between two stages on a GPU, an output can stay on the device: `run(feeds, keep={"mask"})` returns
that output as a `DeviceTensor`, which the next stage accepts as a feed without a host round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from deghost.manifest import Artifact, Manifest, ManifestError, TensorInfo, build_command

log = logging.getLogger("deghost.runtime")

BACKENDS = ("auto", "tensorrt", "onnxruntime")


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
    kind: str  # "onnxruntime" or "tensorrt"
    device: str  # "cpu" or "cuda": where `keep` leaves outputs
    artifact: Artifact
    max_batch: int | None  # the engine profile's largest batch; None when any batch runs

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    def run(self, feeds: dict[str, Feed], keep: Collection[str] = ()) -> dict[str, np.ndarray | DeviceTensor]:
        """Run the graph once. Outputs named in `keep` stay on the device (a DeviceTensor) where the
        backend has one; every other output comes back as a numpy array."""
        ...

    def close(self) -> None: ...


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


def tensorrt_unavailable() -> str | None:
    """Why TensorRT cannot run here (a sentence), or None when it can."""
    from . import tensorrt

    return tensorrt.unavailable_reason()


def open_backend(
    manifest: Manifest,
    stage: str,
    backend: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    memory_arena: bool = False,
) -> Backend:
    """The stage's graph, ready to run, on `backend` ("auto", "tensorrt" or "onnxruntime").

    "auto" takes the stage's TensorRT engine when the manifest lists one, TensorRT and cuda-python
    load, and the engine was built for this TensorRT version and GPU; otherwise the ONNX graph. The
    choice and the reason are logged. `precision` picks among artifacts of one kind ("fp16"/"fp32";
    default: fp16 engines, fp32 graphs). `threads`: ONNX Runtime intra-op threads (default: all cores).
    `memory_arena`: ONNX Runtime's CPU arena (see OnnxRuntimeBackend).
    Raises BackendError (or ManifestError) with the command that fixes it.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    reason = ""
    if backend in ("auto", "tensorrt"):
        engine = _find(manifest, stage, "tensorrt", precision or "fp16")
        opened, reason = _open_engine(manifest, engine, strict=backend == "tensorrt")
        if opened is not None:
            log.info("%s: TensorRT %s engine %s", stage, engine.precision, engine.file)
            return opened
        if backend == "tensorrt":
            raise BackendError(
                f"{stage}: TensorRT requested, but {reason}; build the engine with "
                f"{build_command(manifest.folder, [stage])}, or run with --backend onnxruntime"
            )
        if engine is not None:  # engines were built, yet cannot run here: worth more than an info line
            log.warning("%s: TensorRT engine %s not used: %s", stage, engine.file, reason)
    graph = _find(manifest, stage, "onnx", precision or "fp32")
    if graph is None:
        raise ManifestError(
            f"{manifest.path} lists no ONNX graph for the '{stage}' stage; export it: "
            f"{build_command(manifest.folder, [stage])}"
        )
    from .onnxruntime import OnnxRuntimeBackend

    opened = OnnxRuntimeBackend(manifest, graph, threads=threads, memory_arena=memory_arena)
    log.info("%s: ONNX Runtime (%s) %s graph %s%s", stage, opened.device.upper(), graph.precision, graph.file,
             f"; not TensorRT: {reason}" if reason else "")
    return opened


def _open_engine(manifest: Manifest, engine: Artifact | None, strict: bool) -> tuple[Backend | None, str]:
    """(the engine's backend, "") or (None, why not); with `strict`, a refused engine raises its error."""
    if engine is None:
        return None, "the manifest lists no TensorRT engine for it"
    reason = tensorrt_unavailable()
    if reason is not None:
        return None, reason
    from . import tensorrt

    try:
        return tensorrt.TensorRTBackend(manifest, engine), ""
    except BackendError as error:
        if strict:
            raise
        return None, str(error)


def _find(manifest: Manifest, stage: str, kind: str, preferred: str) -> Artifact | None:
    """The artifact of `kind` for `stage` in the `preferred` precision, else in any precision."""
    return manifest.find(stage, kind, preferred) or manifest.find(stage, kind)
