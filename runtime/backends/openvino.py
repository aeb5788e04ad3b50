"""OpenVINO backend: a stage's ONNX graph compiled for the CPU, in FP32 or BF16.

OpenVINO reads the ONNX graphs the build writes (no IR files: see `read_model` below), and is the
fastest CPU engine measured for these networks (ffhq1024, 2-core AVX-512 EPYC: ~1.3× ONNX Runtime
in f32, ~3× in bf16). On a CPU with bf16 support OpenVINO's *default* inference precision is bf16,
so a plain `compile_model` silently lowers precision: every compile here sets the precision.

BF16 keeps FP32's range with an 8-bit mantissa (relative rounding 2⁻⁸ ≈ 0.4 %), so a stage may only
run in bf16 where its measured error is within `BF16_BOUNDS` (`bf16_accuracy`, recorded by the build in
the FP32 graph's manifest entry, or measured on first use when absent); a stage out of bound runs f32.

`openvino` is imported on first use, so this module loads without it (`unavailable_reason`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Collection

import numpy as np

from deghost.manifest import Artifact, Manifest
from deghost.stages import example_feeds, stage_table

from . import (
    OPENVINO_PRECISIONS,
    BackendError,
    DeviceTensor,
    Feed,
    ManifestNames,
    check_feeds,
    check_graph_names,
    host_feed,
)
from .compiled_cache import CacheKey, CompiledCache, cpu_identity

log = logging.getLogger("deghost.runtime")

INSTALL_HINT = 'pip install "deghost[openvino]"'  # a core dependency on x86; the extra elsewhere
RECORD = "openvino_bf16"  # key of the bf16 accuracy record in an FP32 graph's `validation`

# Bound on max|bf16 − f32| / max|f32| per float output (both on OpenVINO), or on the fraction of
# differing labels. Measured (ffhq1024, untrained weights): encoder 2.3e-4, generator 2.8e-2,
# diffcam 3.5e-2 (the mask: min-max normalised by a small peak, so it amplifies rounding),
# suppressor 3.9e-3, deghosting 6.2e-3. A stage above its bound runs in f32 when bf16 is asked for.
BF16_BOUNDS = {
    "encoder": 1e-2,
    "generator": 5e-2,  # an image in [-1,1]: 5e-2 is ~6 of 255 grey levels at the worst pixel
    "diffcam": 1e-2,  # the mask decides where the edit goes: kept tight, so diffcam runs f32
    "suppressor": 1e-2,
    "deghosting": 2e-2,
    "face_parser": 1e-2,  # fraction of pixels whose label changes
}
BF16_CHECK_BATCH, BF16_CHECK_SEED = 1, 0


@functools.lru_cache(maxsize=1)
def _openvino():
    import openvino

    return openvino


@functools.lru_cache(maxsize=1)
def _core():
    return _openvino().Core()


def unavailable_reason() -> str | None:
    """Why OpenVINO cannot run here (a sentence with the install command), or None when it can."""
    try:
        _openvino()
    except ImportError as error:
        return f"OpenVINO is not installed ({error}); install it: {INSTALL_HINT}"
    if "CPU" not in _core().available_devices:
        return f"OpenVINO sees no CPU device (devices: {_core().available_devices})"
    return None


@functools.lru_cache(maxsize=1)  # the CPU does not change in a process: ask OpenVINO once
def cpu_bf16_missing() -> str | None:
    """Why this CPU cannot compute bf16 (OpenVINO would silently run f32 instead), or None when it can."""
    capabilities = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" in capabilities:
        return None
    return f"this CPU has no bf16 instructions (OpenVINO's CPU capabilities: {', '.join(capabilities)})"


def compile_config(precision: str, threads: int | None = None) -> dict:
    """The CPU plugin's properties for a stage at `precision` ("fp32"/"bf16"), latency-tuned."""
    if precision not in OPENVINO_PRECISIONS:
        raise BackendError(f"unknown OpenVINO precision {precision!r}; choose {' or '.join(OPENVINO_PRECISIONS)}")
    return {
        "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],  # always explicit: the CPU default may be bf16
        "PERFORMANCE_HINT": "LATENCY",  # all threads on one request
        "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1,
        # OpenVINO pins its threads to the first cores; processes sharing a machine (Ray actors, one
        # thread each) would then all run on core 0. Pin only when one process takes every core.
        "ENABLE_CPU_PINNING": not threads or threads >= (os.cpu_count() or 1),
    }


def compile_graph(path, precision: str, threads: int | None = None, shapes: dict[str, list[int]] | None = None,
                  model=None):
    """The ONNX file (or its already read `model`) compiled for OpenVINO's CPU plugin at `precision`
    ("fp32"/"bf16"), latency-tuned; with `shapes` (input name → shape) for those static shapes only.

    Reading the ONNX file directly: IR (.xml/.bin) written at build time would load faster, but the
    build would then write a second copy of every graph (1.9 GB at ffhq1024); the compiled-model cache
    (`OpenVinoBackend`) skips reading the graph altogether once a stage has been compiled on this machine.
    """
    config = compile_config(precision, threads)
    core = _core()
    model = model if model is not None else core.read_model(str(path))
    if shapes is not None:
        model.reshape(shapes)
    return core.compile_model(model, "CPU", config)


def exported(compiled) -> memoryview | bytes:
    """The bytes of a compiled stage (`export_model` gives a BytesIO in OpenVINO 2025+, bytes before)."""
    blob = compiled.export_model()
    return blob.getbuffer() if hasattr(blob, "getbuffer") else blob


def import_compiled(payload: memoryview, precision: str, threads: int | None = None):
    """A compiled stage from the bytes `CompiledModel.export_model` wrote (a compiled-model cache entry)."""
    tensor = _openvino().Tensor(np.frombuffer(payload, np.uint8), shared_memory=True)
    return _core().import_model(tensor, "CPU", compile_config(precision, threads))


def relative_errors(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, float]:
    """Per output: max|candidate − reference| / max|reference| for floats, the fraction differing for integers."""
    errors = {}
    for name, ref in reference.items():
        got = candidate[name]
        if ref.dtype.kind in "iu":
            errors[name] = float(np.mean(ref != got))
        else:
            scale = float(np.abs(ref).max()) or 1.0
            diff = np.abs(got.astype(np.float64) - ref)
            errors[name] = float("inf") if not np.isfinite(got).all() else float(diff.max() / scale)
    return errors


def bf16_accuracy(path, stage: str, preset: str, threads: int | None = None) -> dict:
    """Run the graph in f32 and in bf16 on the stage's example feeds; the record the manifest keeps.

    {"errors": {output: error}, "worst", "bound", "within", "batch", "seed"}, errors as in
    `relative_errors`, bound from BF16_BOUNDS.
    """
    spec = stage_table(preset)[stage]
    feeds = example_feeds(spec, BF16_CHECK_BATCH, BF16_CHECK_SEED)
    outputs = {}
    for precision in OPENVINO_PRECISIONS:
        request = compile_graph(path, precision, threads).create_infer_request()
        result = request.infer(feeds)
        outputs[precision] = {port.get_any_name(): np.array(value) for port, value in result.items()}
    names = spec.output_names()
    errors = relative_errors({n: outputs["fp32"][n] for n in names}, {n: outputs["bf16"][n] for n in names})
    worst = max(errors.values())
    bound = BF16_BOUNDS[stage]
    return {"errors": errors, "worst": worst, "bound": bound, "within": worst <= bound,
            "batch": BF16_CHECK_BATCH, "seed": BF16_CHECK_SEED, "openvino": _openvino().__version__}


@functools.cache
def _measured_on_first_use(path: str, sha256: str, stage: str, preset: str) -> dict:
    del sha256  # part of the cache key only: a rebuilt graph is measured again
    record = bf16_accuracy(path, stage, preset)
    log.info("%s: bf16 accuracy measured on first use (the build records it): worst error %.2g, bound %.2g",
             stage, record["worst"], record["bound"])
    return record


def bf16_record(manifest: Manifest, artifact: Artifact) -> dict:
    """The graph's bf16 accuracy: the build's record when it has one for this file, else measured now."""
    record = artifact.validation.get(RECORD)
    if record and "within" in record:
        return record
    return _measured_on_first_use(str(manifest.file_of(artifact)), artifact.sha256, artifact.stage, artifact.preset)


class OpenVinoBackend(ManifestNames):
    """One stage's ONNX graph on OpenVINO's CPU plugin (see `deghost.runtime.backends.Backend`).

    `precision` is what was asked ("fp32" or "bf16"); `runs_in` what the stage computes in: "fp32"
    when bf16 was asked but the stage's recorded bf16 error is out of bound, or the CPU has no bf16
    instructions (`why` says which).

    The graph is compiled on the first run for that run's input shapes: OpenVINO's kernels for static
    shapes are faster than for the graphs' dynamic batch axis (ffhq1024 generator, 2 images, 2 cores:
    1.16 instead of 1.62 s in f32, 0.36 instead of 0.51 s in bf16). When a later run brings other
    shapes (another batch size), the stage switches to the dynamic graph for good: one compiled graph
    per stage in memory (1.5 GB for EOGI's at ffhq1024), never a recompile per batch size.

    With a `cache` (compiled_cache.CompiledCache) a stage compiled once on this machine is imported from
    it instead of read and compiled; `cache_use` says how the current compiled graph came ("cache hit",
    "compiled", "compiled (cache off)"). Threads may share the backend: each concurrent run takes an infer
    request of its own from a pool over the one compiled graph (the weights are not copied; each request
    holds its own activations), so the pool grows to the number of threads that run at once.
    """

    kind = "openvino"
    device = "cpu"
    max_batch = None  # the graphs have a dynamic batch axis
    concurrent = True  # one infer request per concurrent run

    def __init__(self, manifest: Manifest, artifact: Artifact, precision: str = "fp32", threads: int | None = None,
                 cache: CompiledCache | None = None):
        reason = unavailable_reason()
        if reason is not None:
            raise BackendError(f"{artifact.stage}: {reason}")
        compile_config(precision, threads)  # refuses an unknown precision before any work
        self.path = manifest.verify(artifact) if cache is None else cache.verified(manifest, artifact)
        self.stage, self.artifact, self.precision, self.why = artifact.stage, artifact, precision, ""
        self.threads, self.runs_in, self.cache = threads, precision, cache
        no_bf16 = cpu_bf16_missing() if precision == "bf16" else None
        if no_bf16:
            self.runs_in, self.why = "fp32", f"{no_bf16}: runs f32"
        elif precision == "bf16":
            record = bf16_record(manifest, artifact)
            if not record["within"]:
                self.runs_in = "fp32"
                self.why = f"bf16 error {record['worst']:.2g} > bound {record['bound']:.2g}: runs f32"
        self.compiled = self.static_shapes = self.cache_use = None  # static_shapes: None after the switch, too
        self._payload = None  # the cache entry `compiled` was imported from
        self._idle: list = []  # infer requests of `compiled` not running now
        self._lock = threading.Lock()  # guards compiling, `compiled` and the pool

    def _compile_error(self, error: Exception) -> BackendError:
        return BackendError(f"{self.stage}: OpenVINO could not compile {self.path} ({error}); re-export the stage "
                            "or run with --backend onnxruntime")

    def cache_key(self, shapes: dict[str, list[int]] | None) -> CacheKey:
        """The compiled-model cache entry of this stage at `shapes` (None: the dynamic graph)."""
        return CacheKey(self.artifact.sha256, self.runs_in, json.dumps(shapes, sort_keys=True),
                        compile_config(self.runs_in, self.threads)["INFERENCE_NUM_THREADS"],
                        f"openvino {_openvino().__version__}", cpu_identity())

    def _compile(self, shapes: dict[str, list[int]] | None):
        """The compiled graph for `shapes`, imported from the cache where it holds it; names checked."""
        def build():
            return compile_graph(self.path, self.runs_in, self.threads, shapes)

        try:
            if self.cache is None:
                compiled, self.cache_use = build(), "compiled (cache off)"
            else:
                compiled, self.cache_use = self.cache.load_or_build(
                    self.cache_key(shapes), build, exported,
                    self._import)
        except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
            raise self._compile_error(error) from error
        check_graph_names(self.stage, [port.get_any_name() for port in compiled.inputs],
                          [port.get_any_name() for port in compiled.outputs], self.input_names, self.output_names)
        return compiled

    def _import(self, payload: memoryview):
        """The compiled graph from a cache entry's mapped payload, which is kept while the graph is: OpenVINO
        uses the weights in place (the entry's pages, read from the file as they are touched)."""
        compiled = import_compiled(payload, self.runs_in, self.threads)
        self._payload = payload
        return compiled

    def _acquire(self, shapes: dict[str, list[int]]):
        """(an idle infer request for these input shapes, its compiled graph, the cache entry that graph uses
        in place or None), compiling on the first run and on the switch to the dynamic graph."""
        with self._lock:
            if self.compiled is None or self.static_shapes is not None and self.static_shapes != shapes:
                first, before = self.compiled is None, self.static_shapes
                # the static graph's memory goes before the dynamic one's comes
                self.compiled, self._idle, self._payload = None, [], None
                self.compiled = self._compile(shapes if first else None)
                self.static_shapes = shapes if first else None
                if not first:
                    log.info("%s: OpenVINO input shapes changed (%s → %s): the dynamic-batch graph runs from now on",
                             self.stage, before, shapes)
            request = self._idle.pop() if self._idle else self.compiled.create_infer_request()
            return request, self.compiled, self._payload

    def _release(self, request, compiled) -> None:
        with self._lock:
            if compiled is self.compiled:  # a request of a replaced graph goes with it
                self._idle.append(request)

    def compile_for(self, shapes: dict[str, list[int]]) -> None:
        """Compile (or import from the cache) the graph for these input shapes now, without running it: once
        compiled, the first inference costs what later ones do (measured), so a warm-up run would only
        spend a whole inference."""
        self._release(*self._acquire(shapes)[:2])

    @property
    def requests(self) -> int:
        """Infer requests in the pool at rest: the most runs that were in flight at once."""
        with self._lock:
            return len(self._idle)

    def run(self, feeds: dict[str, Feed], keep: Collection[str] = ()) -> dict[str, np.ndarray | DeviceTensor]:
        check_feeds(self.artifact, feeds)
        arrays = {info.name: host_feed(feeds[info.name], info) for info in self.artifact.inputs}
        # `payload` keeps the weights a request of a replaced graph may still be running on
        request, compiled, payload = self._acquire({name: list(array.shape) for name, array in arrays.items()})
        try:
            # share_outputs=False: the request reuses its output buffers on the next run, so results are copied.
            result = request.infer(arrays, share_inputs=True, share_outputs=False)
        finally:
            self._release(request, compiled)
        by_name = {port.get_any_name(): value for port, value in result.items()}
        del request, payload
        return {name: by_name[name] for name in self.output_names}

    def close(self) -> None:
        with self._lock:
            self.compiled, self._idle, self._payload = None, [], None
