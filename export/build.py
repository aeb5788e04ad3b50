"""Build every stage: ONNX FP32 → ONNX FP16 → TensorRT engine, recorded in `<out>/manifest.json`.

Each artifact records what it was built from (`extra["inputs"]`: checkpoint hash or seed, preset,
deghost version, ONNX hash, TensorRT version and GPU). A re-run skips an artifact whose inputs are
unchanged and whose file still has its recorded sha256, and says which ones it rebuilds and why.
Without TensorRT the ONNX graphs are still built and validated, and the build says what to install.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deghost import __version__
from deghost.attributes import ATTRIBUTES
from deghost.files import sha256_of
from deghost.manifest import Artifact, Manifest, ManifestError, TensorInfo
from deghost.presets import DEFAULT_PRESET, PRESETS, get_preset
from deghost.stages import STAGE_NAMES, Stage, stage_table

from . import sources


@dataclass
class BuildOptions:
    """What `build` makes. Exactly one of `checkpoints` and `random_init` is set."""

    out: Path = Path("engines")
    preset: str = DEFAULT_PRESET
    stages: Sequence[str] = STAGE_NAMES
    # Of the engines; fp16 also writes the FP16 ONNX they are built from. None: fp16 where TensorRT
    # builds engines, else fp32 only (no CPU backend runs the FP16 graphs: 1.4 of 3.7 GB at ffhq1024).
    precision: str | None = None
    checkpoints: Path | None = None
    random_init: int | None = None
    suppressor: Path | None = None  # a suppressor checkpoint other than <checkpoints>/maresunet.pt
    directions: Path | None = None  # a folder of more direction files (e.g. `deghost train direction`'s)
    batch: tuple[int, int, int] = (1, 1, 4)  # TensorRT optimisation profile: min, opt, max
    onnx_only: bool = False
    require_tensorrt: bool = False
    workspace_gb: float = 4.0
    fp16_builder_flag: bool = False  # TensorRT 10 only: FP32 ONNX + BuilderFlag.FP16 instead of strong typing
    validation_batches: Sequence[int] = (1, 3)  # ONNX Runtime vs PyTorch
    warm: Sequence[str] = ()  # OpenVINO precisions whose compiled stages go into the compiled-model cache

    def __post_init__(self):
        self.out = Path(self.out)
        if (self.checkpoints is None) == (self.random_init is None):
            raise ValueError(
                "choose where the weights come from: --checkpoints DIR (the official files) or "
                "--random-init SEED (untrained, for tests and timing)"
            )
        unknown = [s for s in self.stages if s not in STAGE_NAMES]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGE_NAMES)}")
        if self.precision not in (None, "fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {self.precision!r}")
        low, opt, high = self.batch
        if not 1 <= low <= opt <= high:
            raise ValueError(f"--batch needs 1 <= min <= opt <= max, got {low}:{opt}:{high}")
        if self.fp16_builder_flag and self.precision == "fp32":
            raise ValueError("--fp16-builder-flag builds FP16 engines; it cannot be combined with --precision fp32")


class BuildError(RuntimeError):
    """A build that cannot go on; the message says what to do."""


def tensor_infos(specs, profile: tuple[int, int, int] | None = None) -> list[TensorInfo]:
    return [
        TensorInfo(s.name, list(s.shape), s.dtype, [list(s.concrete_shape(b)) for b in profile] if profile else None)
        for s in specs
    ]


def rebuild_reason(manifest: Manifest, stage: str, kind: str, precision: str, inputs: dict) -> str | None:
    """Why the artifact must be (re)built, or None when its recorded inputs and file are unchanged."""
    artifact = manifest.find(stage, kind, precision)
    if artifact is None:
        return "not built yet"
    try:
        manifest.verify(artifact)
    except ManifestError:
        return "its file is missing or was modified"
    had = artifact.extra.get("inputs", {})
    changed = [f"{key} {had.get(key)!r} → {value!r}" for key, value in inputs.items() if had.get(key) != value]
    return "; ".join(changed) or None


class Builder:
    """Runs the build of `options`, one stage at a time, saving the manifest after each artifact."""

    def __init__(self, options: BuildOptions, log: Callable[[str], None]):
        self.options = options
        self.log = log
        self.preset = get_preset(options.preset)
        self.table = stage_table(self.preset)
        self.manifest = self._open_manifest(options.out)
        self.precision = options.precision or "fp32"  # set by `run` from the machine when not asked
        self.written: list[str] = []  # "stage kind precision" of each artifact (re)built by this run
        if options.random_init is not None:
            self.sources = sources.random_sources(self.preset, options.random_init, options.stages)
            if options.suppressor is not None and "suppressor" in options.stages:
                self.sources["suppressor"] = sources.suppressor_source(options.suppressor, self.preset)
        else:
            self.sources = sources.checkpoint_sources(options.checkpoints, self.preset, options.stages,
                                                      options.suppressor)

    def _open_manifest(self, out: Path) -> Manifest:
        try:
            return Manifest.load(out)
        except ManifestError as error:
            if (out / "manifest.json").exists():
                self.log(f"starting a new manifest: {error}")
            return Manifest(out)

    def _done(self, artifact: Artifact, inputs: dict) -> Artifact:
        artifact.extra["inputs"] = inputs
        self.written.append(f"{artifact.stage} {artifact.kind} {artifact.precision}")
        self.manifest.put(artifact)
        self.manifest.save()
        return artifact

    def _needed(self, stage: str, kind: str, precision: str, inputs: dict) -> bool:
        label = f"{stage} {kind} {precision}"
        reason = rebuild_reason(self.manifest, stage, kind, precision, inputs)
        self.log(f"{label}: unchanged, skipped" if reason is None else f"{label}: building ({reason})")
        return reason is not None

    def directions(self) -> None:
        if "generator" not in self.options.stages:
            return
        self.manifest.directions = sources.write_directions(
            self.options.out, self.options.checkpoints, self.options.random_init, self.options.directions, self.log)
        self.manifest.save()

    def onnx_fp32(self, stage: Stage) -> tuple[Artifact, dict | None]:
        """The FP32 graph's artifact, and its ONNX Runtime outputs when it was (re)built now."""
        from .onnx_export import OPSET, export_stage, metadata

        source = self.sources[stage.name]
        inputs = {"source": source.source, "preset": self.preset.name, "deghost_version": __version__, "opset": OPSET}
        if not self._needed(stage.name, "onnx", "fp32", inputs):
            return self.manifest.find(stage.name, "onnx", "fp32"), None
        target = self.options.out / f"{stage.name}.onnx"
        props = metadata(stage, self.preset.name, source.source)
        validation, outputs = export_stage(source.load(), stage, target, props, self.options.validation_batches)
        return self._done(self._artifact(stage, "onnx", "fp32", target, source.source, validation), inputs), outputs

    def onnx_fp16(self, stage: Stage, fp32: Artifact, fp32_outputs: dict | None) -> Artifact:
        from .fp16 import convert_stage

        inputs = {"onnx_sha256": fp32.sha256, "deghost_version": __version__}
        if not self._needed(stage.name, "onnx", "fp16", inputs):
            return self.manifest.find(stage.name, "onnx", "fp16")
        target = self.options.out / f"{stage.name}.fp16.onnx"
        validation = convert_stage(self.manifest.file_of(fp32), stage, target, fp32_outputs)
        artifact = self._artifact(stage, "onnx", "fp16", target, fp32.source, validation)
        artifact.onnx_sha256 = fp32.sha256
        return self._done(artifact, inputs)

    def engine(self, stage: Stage, onnx: Artifact, fp32: Artifact, environment) -> Artifact:
        from .tensorrt import FP16_BUILDER_FLAG, STRONGLY_TYPED, build_engine

        network = FP16_BUILDER_FLAG if self.options.fp16_builder_flag else STRONGLY_TYPED
        batch = self.options.batch
        inputs = {"onnx_sha256": onnx.sha256, "tensorrt_version": environment.tensorrt_version,
                  "gpu_name": environment.gpu_name, "compute_capability": environment.compute_capability,
                  "batch": ":".join(map(str, batch)), "network": network, "deghost_version": __version__}
        if not self._needed(stage.name, "tensorrt", self.precision, inputs):
            return self.manifest.find(stage.name, "tensorrt", self.precision)
        target = self.options.out / f"{stage.name}.{self.precision}.plan"
        validation = build_engine(self.manifest.file_of(onnx), stage, target, batch, network,
                                  self.options.workspace_gb, self.options.out / "timing.cache",
                                  reference_onnx=self.manifest.file_of(fp32), log=self.log)
        artifact = self._artifact(stage, "tensorrt", self.precision, target, onnx.source, validation,
                                  profile=batch)
        artifact.onnx_sha256 = onnx.sha256
        artifact.tensorrt_version = environment.tensorrt_version
        artifact.gpu_name = environment.gpu_name
        artifact.compute_capability = environment.compute_capability
        return self._done(artifact, inputs)

    def bf16_accuracy(self, stage: Stage, fp32: Artifact) -> None:
        """Record the FP32 graph's bf16 error on OpenVINO (the runtime then runs bf16 only where it is in
        bound); skipped without OpenVINO or bf16 instructions (a CPU without them computes "bf16" in f32, so
        its error would read 0; the runtime measures it on first use where bf16 runs), or when already recorded."""
        from deghost.runtime.backends.openvino import RECORD, bf16_accuracy, cpu_bf16_missing, unavailable_reason

        if RECORD in fp32.validation or unavailable_reason() is not None:
            return
        no_bf16 = cpu_bf16_missing()
        if no_bf16:
            self.log(f"{stage.name}: bf16 error not recorded: {no_bf16}")
            return
        record = bf16_accuracy(self.manifest.file_of(fp32), stage.name, self.preset.name)
        fp32.validation[RECORD] = record
        self.manifest.save()
        self.log(f"{stage.name}: bf16 error {record['worst']:.2g} (bound {record['bound']:.2g}): "
                 + ("runs bf16 when asked" if record["within"] else "runs fp32 even when bf16 is asked"))

    def summary(self, environment) -> str:
        """What this run wrote, and why these precisions."""
        why = ("asked for (--precision)" if self.options.precision else
               "TensorRT is here: FP16 graphs and engines" if environment is not None else
               "no TensorRT here, and no CPU backend runs FP16 graphs: FP32 only (--precision fp16 writes them)")
        built = ", ".join(self.written) or "nothing (everything unchanged)"
        return f"precision {self.precision}: {why}. Built: {built}"

    def _artifact(self, stage: Stage, kind: str, precision: str, path: Path, source: str, validation: dict,
                  profile: tuple[int, int, int] | None = None) -> Artifact:
        return Artifact(
            stage=stage.name, kind=kind, precision=precision, file=path.name, sha256=sha256_of(path),
            inputs=tensor_infos(stage.inputs, profile), outputs=tensor_infos(stage.outputs, profile),
            source=source, preset=self.preset.name, validation=validation,
        )

    def run(self, environment) -> Manifest:
        from tqdm import tqdm

        self.precision = self.options.precision or ("fp16" if environment is not None else "fp32")
        self.directions()
        progress = tqdm(self.options.stages, desc="stages", unit="stage", file=sys.stderr)
        for name in progress:
            progress.set_postfix_str(name)
            stage = self.table[name]
            fp32, fp32_outputs = self.onnx_fp32(stage)
            self.bf16_accuracy(stage, fp32)
            onnx = self.onnx_fp16(stage, fp32, fp32_outputs) if self.precision == "fp16" else fp32
            if environment is not None:
                engine_onnx = fp32 if self.options.fp16_builder_flag else onnx
                self.engine(stage, engine_onnx, fp32, environment)
        return self.manifest


def build(options: BuildOptions, log: Callable[[str], None] | None = None) -> Manifest:
    """Build (or reuse) every requested artifact; returns the saved manifest.

    TensorRT engines are built when TensorRT loads and `onnx_only` is not set; when it does not
    load, the ONNX graphs are built and a BuildError is raised only if `require_tensorrt`.
    """
    from tqdm import tqdm

    log = log or tqdm.write
    environment = None
    if not options.onnx_only:
        from .tensorrt import TensorRTUnavailable, environment_info

        try:
            environment = environment_info()
        except TensorRTUnavailable as error:
            if options.require_tensorrt:
                raise BuildError(f"{error}. --require-tensorrt was given: engines are needed") from error
            log(f"TensorRT is not available ({error}): building and validating the ONNX graphs only. "
                "For engines, fix that and re-run (unchanged ONNX graphs are reused).")
    builder = Builder(options, log)
    manifest = builder.run(environment)
    log(builder.summary(environment))
    log(f"wrote {manifest.path}" + ("" if environment is not None or options.onnx_only else " (ONNX only)"))
    if options.warm:
        warm_compiled_cache(options.out, options.warm, log)
    return manifest


WARM_PRECISIONS = ("fp32", "bf16")  # OpenVINO's; `--warm` alone fills both


def warm_compiled_cache(folder: Path, precisions: Sequence[str], log: Callable[[str], None]) -> None:
    """Compile every OpenVINO stage of `folder` at each precision for the shapes a one-face edit runs, into
    the compiled-model cache of this machine (`deghost.runtime.backends.compiled_cache`), so the first
    `deghost edit`, replica or demo click imports them instead of compiling."""
    from deghost.runtime.backends import openvino_unavailable
    from deghost.runtime.pipeline import SUPPRESS_STAGES, Pipeline

    reason = openvino_unavailable()
    if reason is not None:
        log(f"--warm: nothing to compile ahead: {reason}")
        return
    for precision in precisions:
        with Pipeline.load(folder, backend="openvino", precision=precision, device="cpu") as pipe:
            if pipe.cache is None:
                log("--warm: the compiled-model cache is turned off ($DEGHOST_NO_CACHE); nothing written")
                return
            built = {artifact.stage for artifact in pipe.manifest.artifacts}
            modes = [mode for mode, stage in SUPPRESS_STAGES.items() if stage in built]
            if not {"encoder", "generator", "diffcam"} <= built:
                log("--warm: the folder lacks encoder, generator or diffcam; nothing to compile ahead")
                return
            started = time.perf_counter()
            pipe.warm_up(modes)
            stages = ["encoder", "generator", "diffcam", *(SUPPRESS_STAGES[mode] for mode in modes)]
            uses = ", ".join(f"{stage} {pipe.backend(stage).cache_use}" for stage in stages)
            log(f"--warm {precision}: {uses} ({time.perf_counter() - started:.1f} s) in {pipe.cache.folder}")


def parse_batch(text: str) -> tuple[int, int, int]:
    try:
        low, opt, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:OPT:MAX such as 1:1:4, got {text!r}") from None
    return low, opt, high


def add_build_arguments(parser: argparse.ArgumentParser, engines: bool = True) -> None:
    """The build's options; with `engines` False (`deghost export`) only those of the ONNX graphs."""
    weights = parser.add_argument_group("weights (choose one)")
    choice = weights.add_mutually_exclusive_group(required=True)
    official = ", ".join(dict.fromkeys(sources.CHECKPOINT_FILES.values()))
    choice.add_argument("--checkpoints", type=Path, metavar="DIR",
                        help=f"folder with the official files ({official}) and the editing directions "
                        f"({', '.join(' or '.join(a.direction_files) for a in ATTRIBUTES.values())})")
    choice.add_argument("--random-init", type=int, metavar="SEED",
                        help="seeded random weights instead: UNTRAINED graphs, labelled so in every file's "
                        "metadata and the manifest (for tests, timing and CI)")
    weights.add_argument("--suppressor", type=Path, metavar="FILE",
                         help="MAResU-Net checkpoint for the suppressor stage (e.g. from deghost train), instead "
                         "of DIR/maresunet.pt or of random weights")
    weights.add_argument("--directions", type=Path, metavar="DIR",
                         help="more editing directions: every <name>.npy in DIR (with the <name>.json `deghost train "
                         "direction` writes beside it, which names its Diff-CAM class), added to the manifest or "
                         "replacing the attribute of that name")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                        help="network sizes: ffhq1024 = the paper's, tiny = fast (default: %(default)s)")
    parser.add_argument("--stages", nargs="+", choices=STAGE_NAMES, default=list(STAGE_NAMES), metavar="STAGE",
                        help=f"stages to build (default: all: {' '.join(STAGE_NAMES)})")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default=None,
                        help="engine precision; fp16 also writes <stage>.fp16.onnx, with the StyleGAN2 parts "
                        "that need it kept in FP32 (default: fp16 where TensorRT builds engines, else fp32 only: "
                        "no CPU backend runs FP16 graphs)")
    parser.add_argument("--out", type=Path, default=Path("engines"), metavar="DIR",
                        help="output folder for graphs, engines, directions/ and manifest.json (default: engines/)")
    parser.add_argument("--warm", nargs="*", choices=WARM_PRECISIONS, metavar="PRECISION",
                        help="then compile the OpenVINO stages for this machine into the compiled-model cache "
                        "($DEGHOST_CACHE_DIR, default ~/.cache/deghost/compiled), so the first edit does not "
                        "compile them: --warm alone for fp32 and bf16, or --warm fp32 (default: compiled on "
                        "first use)")
    if not engines:
        engine_only = ("batch", "require_tensorrt", "workspace_gb", "fp16_builder_flag")
        parser.set_defaults(onnx_only=True, **{name: getattr(BuildOptions, name) for name in engine_only})
        return
    parser.add_argument("--batch", type=parse_batch, default=BuildOptions.batch, metavar="MIN:OPT:MAX",
                        help="batch sizes of the TensorRT optimisation profile (default: 1:1:4); the ONNX "
                        "graphs take any batch")
    parser.add_argument("--onnx-only", action="store_true", help="stop after the validated ONNX graphs")
    parser.add_argument("--require-tensorrt", action="store_true",
                        help="fail (exit 1) instead of building ONNX only when TensorRT is not available")
    parser.add_argument("--workspace-gb", type=float, default=BuildOptions.workspace_gb, metavar="GB",
                        help="TensorRT builder workspace limit (default: %(default)s)")
    parser.add_argument("--fp16-builder-flag", action="store_true",
                        help="TensorRT 10 only: build from the FP32 ONNX with the FP16 builder flag instead of "
                        "a strongly typed network from the FP16 ONNX (TensorRT 11 has no such flag)")


DESCRIPTION = """\
Export every pipeline stage to ONNX (validated against PyTorch with ONNX Runtime), convert it to
FP16 (validated against the FP32 graph; a stage with NaN/Inf is refused), and build TensorRT
engines, all recorded in OUT/manifest.json. Re-running skips what is unchanged.
Without TensorRT, only the ONNX graphs are built (exit 0, unless --require-tensorrt)."""

EPILOG = """\
examples:
  python export/build_engines.py --checkpoints checkpoints/            official weights, FP16 engines
  python export/build_engines.py --random-init 0 --preset tiny --onnx-only    untrained, fast, no GPU
  python export/build_engines.py --checkpoints ckpt/ --stages suppressor --suppressor runs/best.pt
"""


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    return BuildOptions(
        out=args.out, preset=args.preset, stages=tuple(dict.fromkeys(args.stages)), precision=args.precision,
        checkpoints=args.checkpoints, random_init=args.random_init, suppressor=args.suppressor, batch=args.batch,
        directions=args.directions,
        onnx_only=args.onnx_only, require_tensorrt=args.require_tensorrt, workspace_gb=args.workspace_gb,
        fp16_builder_flag=args.fp16_builder_flag,
        warm=() if args.warm is None else tuple(args.warm or WARM_PRECISIONS),
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Exit code: 0 built, 1 refused (missing files, failed validation, TensorRT required but absent), 2 usage."""
    from deghost.files import DiskFullError
    from deghost.runtime.backends.tensorrt_runner import EngineRunError
    from deghost.training.checkpoints import CheckpointError

    from .fp16 import NonFiniteError
    from .onnx_export import ParityError
    from .tensorrt import TensorRTError, TensorRTUnavailable

    try:
        options = options_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        build(options)
    except (BuildError, sources.SourceError, CheckpointError, ParityError, NonFiniteError, ManifestError,
            TensorRTError, TensorRTUnavailable, EngineRunError, DiskFullError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="build_engines.py", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_build_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))
