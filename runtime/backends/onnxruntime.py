"""ONNX Runtime backend: one InferenceSession per stage graph, on CUDA where onnxruntime-gpu loads, else CPU.

device "cuda" means CUDA: a session whose CUDA provider did not load is refused (BackendError with the
fix), where "auto" runs it on the CPU with a warning. onnxruntime and onnxruntime-gpu installed side by
side (they write the same module) are reported once per process, with the install that fixes it.

On the CPU, `session.run` is already copy-free for contiguous numpy feeds. On CUDA the session runs
through IO binding, so an output the next stage needs stays on the GPU (a DeviceTensor over the
OrtValue's memory) and a feed that is such a tensor is bound by its device address, rows included.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from collections.abc import Callable, Collection
from importlib import metadata

import numpy as np
import onnxruntime as ort

from deghost.manifest import Artifact, Manifest, build_command

from ..gpu_platform import fitting_stack, onnxruntime_gpu_install
from . import BackendError, DeviceTensor, Feed, ManifestNames, check_feeds, check_graph_names, host_feed
from .onnxruntime_cuda import cuda_unavailable, load_cuda_libraries

log = logging.getLogger("deghost.runtime")

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")  # two packages of the one `onnxruntime` module


def has_cuda_provider() -> bool:
    """True where this onnxruntime build lists the CUDA provider (onnxruntime-gpu); whether it loads shows only
    in a session (`onnxruntime_cuda.cuda_unavailable`)."""
    return _CUDA in ort.get_available_providers()


def providers_to_try(device: str = "auto") -> list[str]:
    """CUDA first where this onnxruntime build has it (device "auto" or "cuda"), always CPU last."""
    if device not in ("auto", "cuda", "cpu"):
        raise BackendError(f"unknown ONNX Runtime device {device!r}; choose auto, cuda or cpu")
    has_cuda = has_cuda_provider()
    if device == "cuda" and not has_cuda:
        raise BackendError(f"ONNX Runtime on CUDA requested, but {_no_cuda_provider()}")
    return [_CUDA, _CPU] if has_cuda and device != "cpu" else [_CPU]


def installed_distributions(version: Callable[[str], str] = metadata.version) -> dict[str, str]:
    """{distribution: version} of the ONNX Runtime packages installed (onnxruntime, onnxruntime-gpu)."""
    found = {}
    for name in _DISTRIBUTIONS:
        try:
            found[name] = version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def install_conflict(version: Callable[[str], str] = metadata.version) -> str | None:
    """A sentence when onnxruntime and onnxruntime-gpu are both installed, else None."""
    found = installed_distributions(version)
    if len(found) < len(_DISTRIBUTIONS):
        return None
    listed = " and ".join(f"{name} {number}" for name, number in found.items())
    return (f"{listed} are both installed: they write the same onnxruntime module over each other, so the "
            "one installed last runs, possibly with the other's files")


def gpu_install_problem() -> str | None:
    """What keeps this install of ONNX Runtime from CUDA, with the fix (a sentence), or None when a real
    session runs on the CUDA provider and onnxruntime-gpu is installed alone."""
    if not has_cuda_provider():
        return _no_cuda_provider()
    conflict = install_conflict()
    if conflict:
        return f"{conflict}; keep onnxruntime-gpu alone: {onnxruntime_gpu_install()}"
    return None if cuda_unavailable() is None else cuda_not_loaded()


def _no_cuda_provider() -> str:
    return (f"onnxruntime {ort.__version__} here has no CUDA provider{_conflict_clause()}; install onnxruntime-gpu "
            f"alone: {onnxruntime_gpu_install()}")


def _conflict_clause() -> str:
    conflict = install_conflict()
    return f" ({conflict})" if conflict else ""


@functools.cache
def warn_of_an_install_conflict() -> None:
    """Log the install conflict, if any, once per process, with the fix for a CUDA and for a CPU machine."""
    conflict = install_conflict()
    if conflict:
        log.warning("%s; keep one: on a CUDA machine %s, on the CPU pip uninstall -y onnxruntime onnxruntime-gpu "
                    "&& pip install onnxruntime", conflict, onnxruntime_gpu_install())


def cuda_not_loaded() -> str:
    """Why a session requested on CUDA may have come up on the CPU, and what fixes it (a sentence)."""
    stack = fitting_stack()
    preload = load_cuda_libraries()
    said = f"; onnxruntime.preload_dlls said: {preload}" if preload else ""
    return (f"the CUDA provider of onnxruntime-gpu {ort.__version__} did not load (ONNX Runtime's error above names "
            f"the library it could not open{said}){_conflict_clause()}: it needs the CUDA {stack.major} and cuDNN 9 "
            f"libraries of this driver (the {stack.extra} extra brings them) and an NVIDIA driver {stack.min_driver} "
            f"or newer (nvidia-smi shows it); reinstall with {onnxruntime_gpu_install()}")


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl): nothing to trim
        return None


def _return_freed_heap_to_the_os() -> None:
    """Hand back what ORT freed while optimising the graph: glibc keeps it resident otherwise.

    Measured on the tiny encoder (800 MB graph, ORT_ENABLE_ALL): +2,386 MiB resident after the
    session opens, +815 MiB after malloc_trim(0). The peak during the load is unchanged.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


class OnnxRuntimeBackend(ManifestNames):
    """One stage's ONNX graph (see `deghost.runtime.backends.Backend`)."""

    kind = "onnxruntime"
    max_batch = None  # the graphs have a dynamic batch axis
    concurrent = True  # InferenceSession.run may be called from several threads at once

    def __init__(self, manifest: Manifest, artifact: Artifact, threads: int | None = None, device: str = "auto",
                 memory_arena: bool = False):
        path = manifest.verify(artifact)
        self.stage, self.artifact, self.runs_in, self.why = artifact.stage, artifact, artifact.precision, ""
        options = ort.SessionOptions()
        # All cores for one operator at a time: the stages run one after another, so inter-op
        # parallelism has nothing to overlap, and ORT's default (physical cores) leaves SMT idle.
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's CPU arena keeps every activation buffer a session has used, per session: at 1024² the
        # network pipeline then peaks at 5.8 GB instead of 3.1 GB, and ran no faster (4.6 s per edit
        # either way, 2-core CPU). Off by default; CUDA has its own allocator, untouched by this.
        options.enable_cpu_mem_arena = memory_arena
        warn_of_an_install_conflict()
        requested = providers_to_try(device)
        if _CUDA in requested:
            load_cuda_libraries()  # the pip-installed CUDA/cuDNN libraries, where the provider will find them
        try:
            self.session = ort.InferenceSession(str(path), options, providers=requested)
        except Exception as error:  # ORT raises its own exception types, all worth the same advice
            raise BackendError(
                f"{self.stage}: ONNX Runtime could not load {path} ({error}); re-export it: "
                f"{build_command(manifest.folder, [self.stage])}"
            ) from error
        _return_freed_heap_to_the_os()
        self.device = "cuda" if _CUDA in self.session.get_providers() else "cpu"
        if _CUDA in requested and self.device == "cpu":
            self._cuda_fell_back(device)
        self._check_names()

    def _cuda_fell_back(self, device: str) -> None:
        """A CUDA provider that fails to initialise (CUDA/cuDNN missing or of another version) is dropped
        silently: the session then runs on the CPU, many times slower. "cuda" refuses that; "auto" warns."""
        if device == "cuda":
            self.session = None
            raise BackendError(f"{self.stage}: ONNX Runtime on CUDA requested, but {cuda_not_loaded()}")
        log.warning("%s: this stage runs on the CPU: %s", self.stage, cuda_not_loaded())

    def _check_names(self) -> None:
        check_graph_names(self.stage, [node.name for node in self.session.get_inputs()],
                          [node.name for node in self.session.get_outputs()], self.input_names, self.output_names)

    def run(self, feeds: dict[str, Feed], keep: Collection[str] = ()) -> dict[str, np.ndarray | DeviceTensor]:
        check_feeds(self.artifact, feeds)
        if self.device == "cpu":
            arrays = {info.name: host_feed(feeds[info.name], info) for info in self.artifact.inputs}
            return dict(zip(self.output_names, self.session.run(self.output_names, arrays), strict=True))
        return self._run_bound(feeds, keep)

    def _run_bound(self, feeds: dict[str, Feed], keep: Collection[str]) -> dict[str, np.ndarray | DeviceTensor]:
        binding = self.session.io_binding()
        for info in self.artifact.inputs:
            value = feeds[info.name]
            runs = list(value.row_runs()) if isinstance(value, DeviceTensor) else []
            if len(runs) == 1 and np.dtype(value.dtype) == np.dtype(info.dtype):
                first, _ = runs[0]
                binding.bind_input(info.name, "cuda", 0, np.dtype(info.dtype).type, list(value.view_shape),
                                   value.pointer + first * value.row_bytes)
            else:  # host data, or rows scattered over the producer's array: one upload
                binding.bind_cpu_input(info.name, host_feed(value, info))
        for name in self.output_names:
            binding.bind_output(name, "cuda" if name in keep else "cpu")
        self.session.run_with_iobinding(binding)
        results = {}
        for info, value in zip(self.artifact.outputs, binding.get_outputs(), strict=True):
            if info.name in keep:
                results[info.name] = DeviceTensor(value.data_ptr(), tuple(value.shape()), np.dtype(info.dtype),
                                                  value.numpy, owner=value)
            else:
                results[info.name] = value.numpy()
        return results

    def close(self) -> None:
        self.session = None
