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
import logging
import os
import threading
from collections.abc import Collection

import numpy as np

from deghost.manifest import Artifact, Manifest
from deghost.stages import example_feeds, stage_table

from . import BackendError, DeviceTensor, Feed, ManifestNames, check_feeds, check_graph_names, host_feed

log = logging.getLogger("deghost.runtime")

INSTALL_HINT = 'pip install "deghost[openvino]"'  # a core dependency on x86; the extra elsewhere
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # ours → OpenVINO's INFERENCE_PRECISION_HINT
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


def supports_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX-512 BF16 or AMX): elsewhere bf16 is emulated, slower."""
    return unavailable_reason() is None and "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_graph(path, precision: str, threads: int | None = None, shapes: dict[str, list[int]] | None = None,
                  model=None):
    """The ONNX file (or its already read `model`) compiled for OpenVINO's CPU plugin at `precision`
    ("fp32"/"bf16"), latency-tuned; with `shapes` (input name → shape) for those static shapes only.

    Reading the ONNX file directly: IR (.xml/.bin) written at build time would load faster, but the
    build would then write a second copy of every graph (1.9 GB at ffhq1024) for a one-off saving.
    """
    if precision not in PRECISIONS:
        raise BackendError(f"unknown OpenVINO precision {precision!r}; choose {' or '.join(PRECISIONS)}")
    config = {
        "INFERENCE_PRECISION_HINT": PRECISIONS[precision],  # always explicit: the CPU default may be bf16
        "PERFORMANCE_HINT": "LATENCY",  # one request at a time, all threads on it
        "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1,
        # OpenVINO pins its threads to the first cores; processes sharing a machine (Ray actors, one
        # thread each) would then all run on core 0. Pin only when one process takes every core.
        "ENABLE_CPU_PINNING": not threads or threads >= (os.cpu_count() or 1),
    }
    core = _core()
    model = model if model is not None else core.read_model(str(path))
    if shapes is not None:
        model.reshape(shapes)
    return core.compile_model(model, "CPU", config)


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
    for precision in PRECISIONS:
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
    when bf16 was asked but the stage's recorded bf16 error is out of bound (`why` says so).

    The graph is compiled on the first run for that run's input shapes: OpenVINO's kernels for static
    shapes are faster than for the graphs' dynamic batch axis (ffhq1024 generator, 2 images, 2 cores:
    1.16 instead of 1.62 s in f32, 0.36 instead of 0.51 s in bf16). When a later run brings other
    shapes (another batch size), the stage switches to the dynamic graph for good: one compiled graph
    per stage in memory (1.5 GB for EOGI's at ffhq1024), never a recompile per batch size.
    """

    kind = "openvino"
    device = "cpu"
    max_batch = None  # the graphs have a dynamic batch axis

    def __init__(self, manifest: Manifest, artifact: Artifact, precision: str = "fp32", threads: int | None = None):
        reason = unavailable_reason()
        if reason is not None:
            raise BackendError(f"{artifact.stage}: {reason}")
        if precision not in PRECISIONS:
            raise BackendError(f"unknown OpenVINO precision {precision!r}; choose {' or '.join(PRECISIONS)}")
        self.path = manifest.verify(artifact)
        self.stage, self.artifact, self.precision, self.why = artifact.stage, artifact, precision, ""
        self.threads, self.runs_in = threads, precision
        if precision == "bf16":
            record = bf16_record(manifest, artifact)
            if not record["within"]:
                self.runs_in = "fp32"
                self.why = f"bf16 error {record['worst']:.2g} > bound {record['bound']:.2g}: runs f32"
        try:
            self._model = _core().read_model(str(self.path))  # kept until the first run compiles it
        except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
            raise self._compile_error(error) from error
        check_graph_names(self.stage, [port.get_any_name() for port in self._model.inputs],
                          [port.get_any_name() for port in self._model.outputs], self.input_names, self.output_names)
        self.compiled = self.request = self.static_shapes = None  # static_shapes: None after the switch, too
        self._lock = threading.Lock()

    def _compile_error(self, error: Exception) -> BackendError:
        return BackendError(f"{self.stage}: OpenVINO could not compile {self.path} ({error}); re-export the stage "
                            "or run with --backend onnxruntime")

    def _request_for(self, shapes: dict[str, list[int]]):
        """The infer request that runs these input shapes, compiling on the first run and on the switch."""
        with self._lock:
            if self.request is not None and (self.static_shapes is None or self.static_shapes == shapes):
                return self.request
            first, before = self.request is None, self.static_shapes
            self.compiled = self.request = None  # the static graph's memory goes before the dynamic one's comes
            try:
                self.compiled = compile_graph(self.path, self.runs_in, self.threads, shapes if first else None,
                                              self._model if first else None)
            except Exception as error:
                raise self._compile_error(error) from error
            self._model = None
            self.static_shapes = shapes if first else None
            if not first:
                log.info("%s: OpenVINO input shapes changed (%s → %s): the dynamic-batch graph runs from now on",
                         self.stage, before, shapes)
            self.request = self.compiled.create_infer_request()
            return self.request

    def run(self, feeds: dict[str, Feed], keep: Collection[str] = ()) -> dict[str, np.ndarray | DeviceTensor]:
        check_feeds(self.artifact, feeds)
        arrays = {info.name: host_feed(feeds[info.name], info) for info in self.artifact.inputs}
        request = self._request_for({name: list(array.shape) for name, array in arrays.items()})
        # share_outputs=False: the request reuses its output buffers on the next run, so results are copied.
        result = request.infer(arrays, share_inputs=True, share_outputs=False)
        by_name = {port.get_any_name(): value for port, value in result.items()}
        return {name: by_name[name] for name in self.output_names}

    def close(self) -> None:
        self.request = self.compiled = self._model = None
