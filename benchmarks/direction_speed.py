"""Samples per second of `deghost train direction` on this machine: rendering and scoring one latent at the paper's
resolution (1024², classifier at 256²) in PyTorch and through the exported graphs, side by side.

    python -m benchmarks.direction_speed --engines PAPER_ENGINES

The engines must be an ffhq1024 build with `--random-init 0` (the job checks that they hold the weights it samples
with). Every scorer renders the same latents; after one warm-up batch the scorers take turns, `--rounds` batches
each, so a busy machine slows them alike. Also times the boundary fit (linear SVM) on 10,000 W latents. Writes
benchmarks/results/direction_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from deghost.files import atomic_write_bytes
from deghost.training.direction.boundary import RATIO, train_boundary
from deghost.training.direction.setup import Sources, open_parts

RESULTS = Path(__file__).resolve().parent / "results" / "direction_speed.json"
SCORERS = {  # label → how the job renders and scores
    "pytorch": {},
    "openvino fp32": {"backend": "openvino", "precision": "fp32"},
    "openvino bf16": {"backend": "openvino", "precision": "bf16"},
    "onnxruntime fp32": {"backend": "onnxruntime", "precision": "fp32"},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=Path, required=True, help="ffhq1024 engines built with --random-init 0")
    parser.add_argument("--batch", type=int, default=2, help="latents per scorer call (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="timed batches per scorer (default: %(default)s)")
    parser.add_argument("--scorers", nargs="+", choices=sorted(SCORERS), default=list(SCORERS))
    args = parser.parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory() as folder:
        scorers, sampler = {}, None
        for label in args.scorers:
            engines = args.engines if SCORERS[label] else None
            sources = Sources(random_init=0, preset="ffhq1024", engines=engines, device="cpu", **SCORERS[label])
            started = time.perf_counter()
            parts = open_parts(sources, "w", 0.7, 0, Path(folder) / label)
            sampler = parts.sampler
            scorers[label] = parts.scorer
            print(f"{label}: opened in {time.perf_counter() - started:.1f} s ({parts.scorer.kind})", flush=True)
        latents = sampler.wplus(sampler.draw(0, args.batch))
        warm = {label: scorer(latents) for label, scorer in scorers.items()}  # warm-up; also the agreement check
        seconds = {label: [] for label in scorers}
        for _ in range(args.rounds):
            for label, scorer in scorers.items():
                started = time.perf_counter()
                scorer(latents)
                seconds[label].append(time.perf_counter() - started)
    reference = warm.get("pytorch")
    rows = {}
    for label, times in seconds.items():
        per_sample = statistics.median(times) / args.batch
        agreement = (None if reference is None else
                     float(np.abs(warm[label] - reference).max() / max(np.abs(reference).max(), 1e-12)))
        rows[label] = {"seconds_per_sample": round(per_sample, 4), "samples_per_second": round(1 / per_sample, 4),
                       "rounds_s": [round(t, 3) for t in times], "max_logit_error_vs_pytorch": agreement}
        print(f"{label:18} {per_sample:7.3f} s/sample  {1 / per_sample:6.3f} samples/s  "
              f"logit error vs PyTorch {agreement}", flush=True)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((10_000, 512)).astype(np.float32)
    started = time.perf_counter()
    train_boundary(w, w @ rng.standard_normal(512), RATIO)
    fit = time.perf_counter() - started
    print(f"boundary fit, 10,000 W latents at ratio {RATIO}: {fit:.2f} s")
    result = {"machine": describe(torch), "preset": "ffhq1024", "batch": args.batch, "rounds": args.rounds,
              "weights": "untrained: seed 0 (time does not depend on them)", "scorers": rows,
              "boundary_fit_seconds_10000": round(fit, 3),
              "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    atomic_write_bytes(RESULTS, (json.dumps(result, indent=2) + "\n").encode())
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
