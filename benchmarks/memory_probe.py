"""Peak memory of one pipeline edit, measured in this fresh process; prints one JSON line.

    python -m benchmarks.memory_probe --engines DIR
        --backend onnxruntime|onnxruntime-arena|openvino|openvino-bf16|pytorch
                                      --suppress network|eogi [--edits 3]

A fresh process because allocators keep their pools: in a process that has already run a pipeline,
the high-water mark of a second run measures almost nothing. The onnxruntime probe imports no torch,
as a deployment of the runtime does not. Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

BACKENDS = ("onnxruntime", "onnxruntime-arena", "pytorch")  # arena: Pipeline(memory_arena=True)
CPU_BACKENDS = ("openvino", "openvino-bf16")  # OpenVINO fp32 / bf16 (probed where openvino is installed)
RUNTIME = {"onnxruntime": ("onnxruntime", "fp32"), "onnxruntime-arena": ("onnxruntime", "fp32"),
           "pytorch": ("onnxruntime", "fp32"), "openvino": ("openvino", "fp32"), "openvino-bf16": ("openvino", "bf16")}


def status_mib(field: str) -> float:
    """A /proc/self/status memory field ("VmRSS", "VmHWM": kB) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(f"{field} not in /proc/self/status")


def probe(engines: str, backend: str, suppress: str, threads: int, repeats: int = 3) -> dict:
    """RSS after imports, after loading the pipeline, and the peak over `repeats` edits of one face.

    Several edits, because ONNX Runtime's arenas (if on) grow on the second run too (1024²: 3.9 → 5.8 GB).
    """
    from benchmarks.pipelines import faces
    from deghost.runtime.pipeline import SUPPRESS_STAGES, Pipeline

    if backend == "pytorch":
        import torch

        from deghost.export.torch_pipeline import TorchPipeline

        torch.set_num_threads(threads)
    elif backend.startswith("openvino"):
        import openvino  # noqa: F401  (imported when the first stage compiles; counted with the imports)
    else:
        import onnxruntime  # noqa: F401  (imported when the first session opens; counted with the imports)
    after_imports = status_mib("VmRSS")

    # Opens its stages on first use: for the pytorch probe it only gives the preset, directions and input.
    kind, precision = RUNTIME[backend]
    runtime = Pipeline.load(engines, backend=kind, precision=precision, threads=threads, device="cpu",
                            memory_arena=backend == "onnxruntime-arena")
    if backend == "pytorch":
        stages = ["encoder", "generator", "diffcam", SUPPRESS_STAGES[suppress]]
        reference = TorchPipeline.random(runtime.preset, seed=0, stages=stages)
        batch, _ = runtime.model_batch(faces(1))
        edits = runtime.edits("smile")

        def edit():
            reference.edit(batch, edits, suppress=suppress)
    else:
        runtime.prepare(suppress)
        image = faces(1)[0]

        def edit():
            runtime.edit([image], suppress=suppress)
    after_load = status_mib("VmRSS")

    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        edit()
        seconds.append(time.perf_counter() - start)
    return {
        "backend": backend, "suppress": suppress, "preset": runtime.preset.name, "threads": threads,
        "after_imports_mib": after_imports, "after_load_mib": after_load, "peak_mib": status_mib("VmHWM"),
        "first_edit_seconds": seconds[0], "later_edit_seconds": statistics.median(seconds[1:] or seconds),
        "edits": repeats, "torch_imported": "torch" in sys.modules,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", required=True, help="engine folder with manifest.json")
    parser.add_argument("--backend", required=True, choices=BACKENDS + CPU_BACKENDS)
    parser.add_argument("--suppress", default="network", choices=["network", "eogi"])
    parser.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime intra-op threads")
    parser.add_argument("--edits", type=int, default=3, help="edits of the face, one after another (default: 3)")
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.engines, args.backend, args.suppress, args.threads, args.edits)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
