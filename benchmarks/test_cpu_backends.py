"""The CPU backends side by side: ONNX Runtime FP32, OpenVINO f32 and OpenVINO bf16.

Per stage: latency, bf16 error relative to f32, and the achieved GFLOP/s as a share of the machine's
honest peak (the best sustained matmul of the same precision, beside the theoretical FMA peak, see
`benchmarks.machine.cpu_peaks`). End to end per backend: the `network` pipeline vs EOGI's, interleaved,
the ours/EOGI ratio, the output's error against ONNX Runtime FP32 on the bundled photo, and the peak
memory of a fresh process. Skipped without OpenVINO.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.machine import cpu_peaks
from benchmarks.pipelines import faces, pipeline_gflop, timed
from benchmarks.test_memory import run_probe
from deghost.manifest import Manifest
from deghost.stages import example_feeds, stage_table

pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install deghost[openvino]")

CONFIGS = (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"))
PROBES = {("onnxruntime", "fp32"): "onnxruntime", ("openvino", "fp32"): "openvino",
          ("openvino", "bf16"): "openvino-bf16"}
STAGE_BATCH = {"generator": 2}  # reconstruction + edit: what one edit of one image renders


def best_seconds(run, repeats: int = 2) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def test_cpu_backends_per_stage_and_end_to_end(benchmark, torch_module, engines, report):
    from deghost.runtime.backends import computes_in, open_backend
    from deghost.runtime.backends.openvino import relative_errors
    from deghost.runtime.pipeline import Pipeline

    engines = Path(engines).resolve()
    preset = Manifest.load(engines).artifacts[0].preset
    manifest = Manifest.load(engines)
    peaks = cpu_peaks(torch_module)
    gflop = {**pipeline_gflop(torch_module, preset, "network"), **pipeline_gflop(torch_module, preset, "eogi")}
    threads = torch_module.get_num_threads()
    stages = [name for name in stage_table(preset) if name in gflop]
    stage_rows, e2e_rows, memory_rows = [], [], []

    def measure():
        for name in stages:
            feeds = example_feeds(stage_table(preset)[name], STAGE_BATCH.get(name, 1))
            reference = None
            for kind, precision in CONFIGS:
                backend = open_backend(manifest, name, kind, precision, threads=threads, device="cpu")
                seconds = best_seconds(lambda b=backend, f=feeds: b.run(f))
                outputs = backend.run(feeds)
                reference = reference if kind == "onnxruntime" or reference is not None else outputs
                error = max(relative_errors(reference, outputs).values()) if kind == "openvino" else None
                runs_in = computes_in(backend)
                peak = peaks["bf16" if runs_in == "bf16" else "fp32"]
                stage_rows.append({
                    "label": f"{name} · {kind} {runs_in}", "seconds": seconds, "stage": name, "backend": kind,
                    "precision": runs_in, "GFLOP": gflop[name], "GFLOP/s": gflop[name] / seconds,
                    "% of sustained peak": 100 * gflop[name] / seconds / peak,
                    "% of theoretical peak": 100 * gflop[name] / seconds / (peaks[f"theoretical {runs_in}"]
                                                                          or peaks["theoretical fp32"]),
                    "error vs f32": error,
                })
                backend.close()
        image = faces(1)[0]
        outputs = {}
        for kind, precision in CONFIGS:
            with Pipeline.load(engines, backend=kind, precision=precision, threads=threads, device="cpu") as pipe:
                first = pipe.edit([image], suppress=["network", "eogi"])  # warm-up, and the outputs compared
                outputs[(kind, precision)] = first.outputs
                seconds = {"network": [], "eogi": []}
                for index in range(2):
                    for mode in ("network", "eogi") if index % 2 == 0 else ("eogi", "network"):
                        seconds[mode].append(timed(pipe.edit, [image], suppress=mode)[0])
                reference = outputs[CONFIGS[0]]
                error = max(relative_errors({m: reference[m]}, {m: outputs[(kind, precision)][m]})[m]
                            for m in reference)
                network, eogi = statistics.median(seconds["network"]), statistics.median(seconds["eogi"])
                e2e_rows.append({
                    "label": f"network · {kind} {precision}", "seconds": network, "backend": f"{kind} {precision}",
                    "network s/image": network, "EOGI s/image": eogi, "ours/EOGI": network / eogi,
                    "output error vs ORT fp32": error,
                    "stages": ", ".join(f"{s} {p.split(' ')[-1]}" for s, p in pipe.describe().items()),
                })
        for config in CONFIGS:
            probe = run_probe(engines, PROBES[config], "network", threads)
            memory_rows.append({"label": f"{PROBES[config]} · network", "peak MiB": probe["peak_mib"],
                                "MiB after load": probe["after_load_mib"],
                                "later edits s": probe["later_edit_seconds"]})

    benchmark.pedantic(measure, rounds=1, iterations=1)
    add_cpu_rows(report, preset, peaks, stage_rows, e2e_rows)
    for row in memory_rows:
        report.add(f"CPU backends peak memory, preset {preset}, network, one face edited 3 times", row,
                   chart="peak MiB")
    report.notes.append(
        f"CPU peak: theoretical = {peaks['derivation']} (the nominal clock /proc/cpuinfo reports; boost can "
        "exceed it); sustained = the best 2048² matmul (OpenVINO, and PyTorch for fp32). Shares above 100 % "
        "mean the backend does fewer operations than the direct-convolution count (Winograd).")
    report.notes.append("bf16 error = max|bf16 − f32| / max|f32| per stage (OpenVINO, seeded example inputs); a "
                        "stage whose error exceeds its bound (runtime/backends/openvino.py BF16_BOUNDS) runs f32.")
    benchmark.extra_info.update(stages=stage_rows, end_to_end=e2e_rows, memory=memory_rows, peaks=peaks)
    assert all(row["seconds"] > 0 for row in stage_rows + e2e_rows)
    assert all(np.isfinite(row["output error vs ORT fp32"]) for row in e2e_rows)


def add_cpu_rows(report, preset: str, peaks: dict, stage_rows: list[dict], e2e_rows: list[dict]) -> None:
    """The per-stage and end-to-end tables of the CPU backends (titles name the peaks they divide by)."""
    peak_text = (f"sustained fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16'] or 0:.0f} GFLOP/s; theoretical fp32 "
                 f"{peaks['theoretical fp32']:.0f}, bf16 {peaks['theoretical bf16'] or 0:.0f} GFLOP/s")
    for row in stage_rows:
        report.add(f"CPU backends per stage, preset {preset}, batch 1 ({peak_text})", row)
    for row in e2e_rows:
        report.add(f"CPU backends end to end, preset {preset}, one face, network vs EOGI", row)
