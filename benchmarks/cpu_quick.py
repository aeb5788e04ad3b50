"""A short side-by-side of the CPU backends on an engine folder, when the full benchmark cannot run:
per stage (best of 2 after a warm-up) and one face end to end, network and EOGI, ONNX Runtime fp32 vs
OpenVINO f32 vs bf16; GFLOP per stage from the committed results.json; added to the results files.

    python -m benchmarks.cpu_quick --engines /work/ffhq_engines [--preset ffhq1024]
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.conftest import RESULTS
from benchmarks.machine import cpu_peaks, describe
from benchmarks.pipelines import faces
from benchmarks.report import Report
from benchmarks.test_cpu_backends import CONFIGS, STAGE_BATCH, add_cpu_rows, best_seconds
from deghost.runtime.backends import computes_in, open_backend
from deghost.runtime.backends.openvino import relative_errors
from deghost.runtime.pipeline import Pipeline
from deghost.stages import example_feeds, stage_table

STAGES = ("encoder", "generator", "diffcam", "suppressor", "deghosting")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engines", required=True)
    parser.add_argument("--preset", default="ffhq1024")
    args = parser.parse_args()
    folder = RESULTS / args.preset
    earlier = json.loads((folder / "results.json").read_text())
    gflop = {row["stage"]: row["GFLOP/image"] for rows in earlier["sections"].values() for row in rows
             if "GFLOP/image" in row and "stage" in row}
    gflop["generator"] *= 2  # the rows are per image at batch 1; one edit renders 2
    peaks = cpu_peaks()
    print("peaks", peaks, flush=True)
    report = Report(describe())
    pipe = Pipeline.load(args.engines)
    table = stage_table(args.preset)
    stage_rows, e2e_rows = [], []
    for name in STAGES:
        feeds = example_feeds(table[name], STAGE_BATCH.get(name, 1))
        reference = None
        for kind, precision in CONFIGS:
            backend = open_backend(pipe.manifest, name, kind, precision, device="cpu")
            seconds = best_seconds(lambda b=backend, f=feeds: b.run(f), repeats=1)
            outputs = backend.run(feeds)
            error = None
            if kind == "openvino":
                reference = reference or outputs
                error = max(relative_errors(reference, outputs).values())
            runs_in = computes_in(backend)
            rate = gflop[name] / seconds
            row = {"label": f"{name} · {kind} {runs_in}", "seconds": seconds, "stage": name, "backend": kind,
                   "precision": runs_in, "GFLOP": gflop[name], "GFLOP/s": rate,
                   "% of sustained peak": 100 * rate / peaks["bf16" if runs_in == "bf16" else "fp32"],
                   "% of theoretical peak": 100 * rate / peaks[f"theoretical {runs_in}"], "error vs f32": error}
            print(row, flush=True)
            stage_rows.append(row)
            backend.close()
    image = faces(1)[0]
    outputs = {}
    for kind, precision in CONFIGS:
        with Pipeline.load(args.engines, backend=kind, precision=precision, device="cpu") as run:
            outputs[kind, precision] = run.edit([image], suppress=["network", "eogi"]).outputs  # warm-up
            seconds = {}
            for mode in ("network", "eogi"):
                start = time.perf_counter()
                run.edit([image], suppress=mode)
                seconds[mode] = time.perf_counter() - start
            ref = outputs[CONFIGS[0]]
            error = max(relative_errors({m: ref[m]}, {m: outputs[kind, precision][m]})[m] for m in ref)
            row = {"label": f"network · {kind} {precision}", "seconds": seconds["network"],
                   "backend": f"{kind} {precision}", "network s/image": seconds["network"],
                   "EOGI s/image": seconds["eogi"], "ours/EOGI": seconds["network"] / seconds["eogi"],
                   "output error vs ORT fp32": error,
                   "stages": ", ".join(f"{s} {p.split(' ')[-1]}" for s, p in run.describe().items())}
            print(row, flush=True)
            e2e_rows.append(row)
    add_cpu_rows(report, args.preset, peaks, stage_rows, e2e_rows)
    report.notes.append(
        f"CPU backends: measured with `python -m benchmarks.cpu_quick` (one timed run per row after a warm-up, "
        f"compare rows of one table only). Peak: theoretical = {peaks['derivation']} (nominal "
        "clock; boost can exceed it); sustained = the best 2048² matmul on OpenVINO (fp32, bf16). bf16 error = "
        "max|bf16 − f32| / max|f32| (OpenVINO, seeded inputs); stages above their bound run f32.")
    print("\n".join(str(p) for p in report.write(folder)))


if __name__ == "__main__":
    main()
