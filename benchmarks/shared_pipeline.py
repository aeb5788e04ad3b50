"""Peak memory and wall time of one Pipeline shared by 4 threads × 3 edits, beside the same 12 edits run by
one thread, per CPU backend; each case in a fresh process (allocators keep their pools).

    python -m benchmarks.shared_pipeline --engines DIR

Writes benchmarks/results/shared_pipeline/shared_<preset>.json (the machine and every figure). Linux only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.machine import describe
from benchmarks.memory_probe import status_mib
from deghost.files import atomic_write_bytes
from deghost.manifest import Manifest

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "shared_pipeline"
CASES = (("openvino", "fp32"), ("openvino", "bf16"), ("onnxruntime", "fp32"))
THREADS, EDITS = 4, 3


def probe(engines: str, backend: str, precision: str, threads: int) -> dict:
    """`threads` threads share one Pipeline, THREADS × EDITS edits of one aligned face in all."""
    import numpy as np

    from deghost.runtime.pipeline import Pipeline

    pipe = Pipeline.load(engines, backend=backend, precision=precision, device="cpu")
    side = pipe.preset.image_size
    face = np.random.default_rng(0).uniform(-1, 1, (1, 3, side, side)).astype(np.float32)
    pipe.edit(face)  # opened, compiled and run once before the clock
    after_first = status_mib("VmRSS")
    per_thread = THREADS * EDITS // threads
    started = time.perf_counter()
    workers = [threading.Thread(target=lambda: [pipe.edit(face) for _ in range(per_thread)]) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"threads": threads, "edits": THREADS * EDITS, "seconds": round(time.perf_counter() - started, 2),
            "MiB after the first edit": round(after_first), "peak MiB": round(status_mib("VmHWM"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=Path, required=True)
    parser.add_argument("--probe", nargs=3, metavar=("BACKEND", "PRECISION", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        backend, precision, threads = args.probe
        print(json.dumps(probe(str(args.engines), backend, precision, int(threads))))
        return
    rows = []
    for backend, precision in CASES:
        for threads in (1, THREADS):
            command = [sys.executable, "-m", "benchmarks.shared_pipeline", "--engines", str(args.engines),
                       "--probe", backend, precision, str(threads)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=True)
            rows.append({"backend": f"{backend} {precision}", **json.loads(done.stdout.strip().splitlines()[-1])})
            print(rows[-1], flush=True)
    result = {"machine": describe(), "preset": Manifest.load(args.engines).artifacts[0].preset, "rows": rows,
              "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"shared_{result['preset']}.json"
    atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())
    print(f"written: {path}")


if __name__ == "__main__":
    main()
