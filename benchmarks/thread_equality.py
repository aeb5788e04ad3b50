"""Which stage's output depends on the thread count: one batch edited by two pipelines that differ only in
`threads`, each stage's output compared (max |difference|, and output pixels that differ in 8 bits).

    python -m benchmarks.thread_equality --engines DIR [--backend onnxruntime] [--images 8] [--threads 1 2]

Prints one JSON line per backend: per stage the largest difference of its float output, and the number of
8-bit pixels of the final image that differ. Ray Data actors run with `--threads` of their own (the cores
split between them), the local folder mode with all of them: this says when their files are equal.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def compare(engines: str, backend: str, images: int, threads: tuple[int, int]) -> dict:
    from benchmarks.pipelines import faces
    from deghost.runtime.images import from_model_output
    from deghost.runtime.pipeline import Pipeline

    photos = [np.ascontiguousarray(np.roll(face, 5 * i, axis=1)) for i, face in enumerate(faces(images))]
    results = []
    for count in threads:
        with Pipeline.load(engines, backend=backend, threads=count, device="cpu") as pipe:
            results.append(pipe.edit(photos, "smile", 20.0, ["network", "eogi"]))
    a, b = results
    floats = {"encoder (w)": (a.w, b.w), "generator (fused)": (a.fused, b.fused), "diffcam (mask)": (a.mask, b.mask),
              **{f"{mode} (output)": (a.outputs[mode], b.outputs[mode]) for mode in a.outputs}}
    return {
        "backend": backend, "threads": list(threads), "images": images,
        "max_abs_difference": {stage: float(np.abs(x - y).max()) for stage, (x, y) in floats.items()},
        "pixels_differing": {mode: int((from_model_output(a.outputs[mode]) != from_model_output(b.outputs[mode]))
                                       .any(-1).sum()) for mode in a.outputs},
        "files_differing": {mode: int((from_model_output(a.outputs[mode]) != from_model_output(b.outputs[mode]))
                                      .reshape(len(a.outputs[mode]), -1).any(1).sum()) for mode in a.outputs},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", required=True)
    parser.add_argument("--backend", nargs="+", default=["onnxruntime", "openvino"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs=2, default=[1, 2])
    args = parser.parse_args(argv)
    for backend in args.backend:
        print(json.dumps(compare(args.engines, backend, args.images, tuple(args.threads))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
