"""The CPU backends side by side: ONNX Runtime FP32, OpenVINO f32 and OpenVINO bf16.

Per stage: latency, bf16 error relative to f32, and the achieved GFLOP/s as a share of the machine's
honest peak (the best sustained matmul of the same precision, beside the theoretical FMA peak, see
`benchmarks.machine.cpu_peaks`). End to end per backend: the `network` pipeline vs EOGI's, interleaved,
the ours/EOGI ratio, the output's error against ONNX Runtime FP32 on the bundled photo, and the peak
memory of a fresh process. Skipped without OpenVINO.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.cpu_backends import BF16_NOTE, CONFIGS, add_cpu_rows, end_to_end_rows, peak_note, stage_rows
from benchmarks.machine import cpu_peaks
from benchmarks.pipelines import faces, pipeline_gflop
from benchmarks.test_memory import run_probe
from deghost.manifest import Manifest
from deghost.stages import stage_table

pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install deghost[openvino]")

PROBES = {("onnxruntime", "fp32"): "onnxruntime", ("openvino", "fp32"): "openvino",
          ("openvino", "bf16"): "openvino-bf16"}


def test_cpu_backends_per_stage_and_end_to_end(benchmark, torch_module, engines, report):
    engines = Path(engines).resolve()
    manifest = Manifest.load(engines)
    preset = manifest.artifacts[0].preset
    peaks = cpu_peaks(torch_module)
    gflop = {**pipeline_gflop(torch_module, preset, "network"), **pipeline_gflop(torch_module, preset, "eogi")}
    threads = torch_module.get_num_threads()
    stages = [name for name in stage_table(preset) if name in gflop]
    rows = {}

    def measure():
        rows["stages"] = stage_rows(manifest, preset, stages, gflop, peaks, threads)
        rows["end_to_end"] = end_to_end_rows(engines, faces(1)[0], threads, gflop, peaks)
        rows["memory"] = []
        for config in CONFIGS:
            probe = run_probe(engines, PROBES[config], "network", threads)
            rows["memory"].append({"label": f"{PROBES[config]} · network", "peak MiB": probe["peak_mib"],
                                   "MiB after load": probe["after_load_mib"],
                                   "later edits s": probe["later_edit_seconds"]})

    benchmark.pedantic(measure, rounds=1, iterations=1)
    add_cpu_rows(report, preset, peaks, rows["stages"], rows["end_to_end"])
    for row in rows["memory"]:
        report.add(f"CPU backends peak memory, preset {preset}, network, one face edited 3 times", row,
                   chart="peak MiB")
    report.notes += [peak_note(peaks), BF16_NOTE]
    benchmark.extra_info.update(**rows, peaks=peaks)
    assert all(row["seconds"] > 0 for row in rows["stages"] + rows["end_to_end"])
    assert all(np.isfinite(row["output error vs ORT fp32"]) for row in rows["end_to_end"])
