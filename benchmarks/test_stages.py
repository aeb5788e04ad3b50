"""Per stage and per backend: latency at batch 1 and at the best batch, and achieved GFLOP/s against
the machine's sustained peak (benchmarks.machine.cpu_peaks). PyTorch eager (CPU; CUDA FP16 where a GPU is present), ONNX
Runtime, and TensorRT FP16 where the engine folder has engines and TensorRT loads.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from benchmarks.machine import cpu_peaks, matmul_peak_gflops
from deghost.manifest import Manifest
from deghost.stages import example_feeds as stage_inputs
from deghost.stages import stage_table


def median_seconds(run, repeats: int = 2) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def torch_runner(torch_module, graph, feeds: dict, device: str = "cpu", half: bool = False):
    tensors = [torch_module.from_numpy(value).to(device) for value in feeds.values()]
    if half:
        tensors = [t.half() if t.is_floating_point() else t for t in tensors]

    def run():
        with torch_module.inference_mode():
            graph(*tensors)
        if device != "cpu":
            torch_module.cuda.synchronize()

    return run


def backends_for(torch_module, manifest: Manifest, stage: str, graph, peaks: dict) -> dict:
    """name → (factory(feeds) → run callable, peak GFLOP/s of the device it runs on)."""
    from deghost.runtime.backends import open_backend
    from deghost.runtime.backends.tensorrt import unavailable_reason

    onnxruntime = open_backend(manifest, stage, "onnxruntime", "fp32")
    backends = {
        "pytorch cpu fp32": (lambda feeds: torch_runner(torch_module, graph, feeds), peaks["cpu"]),
        "onnxruntime fp32": (lambda feeds: lambda: onnxruntime.run(feeds), peaks["cpu"]),
    }
    if "cuda" in peaks:
        gpu_graph = copy.deepcopy(graph).to("cuda").half()  # a copy: the CPU rows keep the FP32 graph
        backends["pytorch cuda fp16"] = (
            lambda feeds: torch_runner(torch_module, gpu_graph, feeds, "cuda", half=True), peaks["cuda"])
        if manifest.find(stage, "tensorrt") and unavailable_reason() is None:
            engine = open_backend(manifest, stage, "tensorrt")
            backends["tensorrt fp16"] = (lambda feeds: lambda: engine.run(feeds), peaks["cuda"])
    return backends


def test_stage_latency_and_throughput_per_backend(benchmark, request, torch_module, engines, report):
    from deghost.export.torch_pipeline import TorchPipeline
    from deghost.training.flops import forward_gflop

    manifest = Manifest.load(engines)
    preset = manifest.artifacts[0].preset
    graphs = TorchPipeline.random(preset, seed=0).graphs
    batches = (1, 2, 4, 8) if torch_module.cuda.is_available() else (1, 2)
    cpu = cpu_peaks(torch_module)  # the best sustained fp32 kernel, not one PyTorch matmul (see machine.py)
    peaks = {"cpu": cpu["fp32"]}
    if torch_module.cuda.is_available():
        peaks["cuda"] = matmul_peak_gflops(torch_module, device="cuda", dtype=torch_module.float16)
    rows = []

    def measure_all():
        for name, stage in stage_table(preset).items():
            inputs = [torch_module.from_numpy(value) for value in stage_inputs(stage, 1).values()]
            gflop = forward_gflop(graphs[name], *inputs)
            for backend, (factory, peak) in backends_for(torch_module, manifest, name, graphs[name], peaks).items():
                per_image = {b: median_seconds(factory(stage_inputs(stage, b))) / b for b in batches}
                best = min(per_image, key=per_image.get)
                rows.append({
                    "label": f"{name} · {backend}", "seconds": per_image[1], "stage": name, "backend": backend,
                    "batch 1 ms": per_image[1] * 1e3, "best batch": best, "best ms/image": per_image[best] * 1e3,
                    "GFLOP/image": gflop, "GFLOP/s": gflop / per_image[best],
                    "% of sustained peak": 100 * gflop / per_image[best] / peak,
                })

    benchmark.pedantic(measure_all, rounds=1, iterations=1)
    peak_text = ", ".join(f"{device} {value:.0f} GFLOP/s" for device, value in peaks.items())
    title = (f"Per stage and backend, preset {preset} (sustained peak: {peak_text}; theoretical cpu fp32 "
             f"{cpu['theoretical fp32']:.0f} GFLOP/s)")
    for row in rows:
        report.add(title, row)
    report.notes.append("GFLOP counts direct convolution (torch.utils.flop_counter); a backend using Winograd or "
                        "FFT convolutions does fewer operations, so it can exceed the matmul peak.")
    benchmark.extra_info["stages"] = rows
    assert {row["stage"] for row in rows} == set(stage_table(preset))
    assert all(row["GFLOP/s"] > 0 for row in rows)
