"""TensorRT backend: a stage's plan checked against this machine and the manifest, run by a TensorRTRunner.

The runner (tensorrt_runner.py, also the build's validation) owns the engine, its context and its
device buffers, allocated once at the profile's largest shapes. All stages share one stream, so a
stage's output can feed the next stage where it lies (a DeviceTensor) with no host round trip; `run`
synchronizes before it returns, which keeps per-stage timings honest.

`tensorrt` and `cuda` are imported on first use, so this module (and `engine_mismatch`, a pure
function) loads on machines without them.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from deghost.manifest import Artifact, Manifest, build_command

from .. import gpu_platform
from ..gpu_platform import CudaError, GPUUnavailable, Platform
from . import BackendError, DeviceTensor, Feed, ManifestNames, check_feeds
from .tensorrt_runner import EngineRunError, TensorRTRunner


def engine_mismatch(artifact: Artifact, running: Platform, folder: str = "engines") -> str | None:
    """Why the engine `artifact` must not run on the `running` platform, or None when it may.

    A plan only deserializes under the TensorRT version that built it, and its kernels are chosen
    for one GPU: a different compute capability cannot run them, and another GPU model of the same
    capability runs them with tactics tuned for the wrong chip. The answer ends with the command
    that rebuilds the engine here.
    """
    problems = []
    if artifact.tensorrt_version != running.tensorrt_version:
        problems.append(f"TensorRT {artifact.tensorrt_version} (running: {running.tensorrt_version})")
    if artifact.compute_capability != running.compute_capability:
        problems.append(f"compute capability {artifact.compute_capability} (running: {running.compute_capability})")
    if _gpu_key(artifact.gpu_name) != _gpu_key(running.gpu_name):
        problems.append(f"GPU {artifact.gpu_name!r} (running: {running.gpu_name!r})")
    if not problems:
        return None
    return (
        f"engine {artifact.file} ({artifact.stage}, {artifact.precision}) was built for " + ", ".join(problems)
        + f"; rebuild it on this machine: {build_command(folder, [artifact.stage], artifact.precision)}"
    )


def _gpu_key(name: str | None) -> str:
    return " ".join((name or "").lower().split())


def unavailable_reason() -> str | None:
    """Why this backend cannot open here (TensorRT, cuda-python or the GPU missing, or no stream), or None."""
    reason = gpu_platform.tensorrt_platform_missing()
    if reason is not None:
        return reason
    try:
        _shared()
    except BackendError as error:
        return str(error)
    return None


@dataclass
class _Shared:
    stream: object  # cudaStream_t, the one stream of every stage
    platform: Platform


@functools.lru_cache(maxsize=1)
def _shared() -> _Shared:
    try:
        platform = gpu_platform.platform()
        stream = gpu_platform.call(gpu_platform.cudart().cudaStreamCreate, what="cudaStreamCreate")
    except (GPUUnavailable, CudaError) as error:
        raise BackendError(f"no usable CUDA GPU: {error}") from error
    return _Shared(stream, platform)


class TensorRTBackend(ManifestNames):
    """One stage's TensorRT plan (see `deghost.runtime.backends.Backend`), run by a TensorRTRunner on the stream
    all stages share."""

    kind = "tensorrt"
    device = "cuda"
    concurrent = False  # one execution context and its buffers: the Pipeline serialises runs

    def __init__(self, manifest: Manifest, artifact: Artifact):
        shared = _shared()
        mismatch = engine_mismatch(artifact, shared.platform, str(manifest.folder))
        if mismatch:
            raise BackendError(mismatch)
        path = manifest.verify(artifact)
        self.stage, self.artifact, self.runs_in, self.why = artifact.stage, artifact, artifact.precision, ""
        rebuild = f"rebuild it: {build_command(manifest.folder, [self.stage])}"
        try:
            self.runner = TensorRTRunner(path.read_bytes(), self.stage)
        except EngineRunError as error:
            raise EngineRunError(self.stage, error.call, f"{path}: {error.detail}; {rebuild}") from None
        missing = [name for name in self.input_names + self.output_names if name not in self.runner.dtypes]
        if missing:
            raise BackendError(f"{self.stage}: engine {path} has no tensors {missing}; {rebuild}")
        self.max_batch = self.runner.max_batch
        self.runner.activate(stream=shared.stream)  # the shared stream: one stage's output feeds the next in place

    def run(self, feeds: dict[str, Feed], keep: Collection[str] = ()) -> dict[str, np.ndarray | DeviceTensor]:
        check_feeds(self.artifact, feeds, self.max_batch)  # the manifest's contract, then the engine's own checks
        return self.runner.infer(feeds, keep)

    def close(self) -> None:
        """Free this stage's buffers (outputs kept as DeviceTensors die with them). The stream is every
        stage's (`_shared`), so it stays; CUDA releases it when the process ends."""
        self.runner.deactivate()
