"""The CPU backends side by side (ONNX Runtime FP32, OpenVINO f32, OpenVINO bf16): the measurements and
tables that the benchmark (test_cpu_backends.py) and the short run (cpu_quick.py) share."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.pipelines import timed
from deghost.manifest import Manifest
from deghost.stages import example_feeds, stage_table

CONFIGS = (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"))
STAGE_BATCH = {"generator": 2}  # reconstruction + edit: what one edit of one image renders


def best_seconds(run, repeats: int = 2) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def config_label(kind: str, asked: str, runs_in: str) -> str:
    """'openvino bf16', or 'openvino bf16 → fp32' where the stage's bf16 error is over its bound."""
    return f"{kind} {asked}" if asked == runs_in else f"{kind} {asked} → {runs_in} (over bound)"


def stage_rows(manifest: Manifest, preset: str, stages: list[str], gflop: dict[str, float], peaks: dict,
               threads: int | None, repeats: int = 2) -> list[dict]:
    """Each stage on each CPU config: best time, GFLOP/s, share of the sustained and theoretical peak of
    the precision it computes in, and (OpenVINO) the error relative to OpenVINO f32."""
    from deghost.runtime.backends import computes_in, open_backend
    from deghost.runtime.backends.openvino import relative_errors

    rows = []
    for name in stages:
        feeds = example_feeds(stage_table(preset)[name], STAGE_BATCH.get(name, 1))
        reference = None
        for kind, precision in CONFIGS:
            backend = open_backend(manifest, name, kind, precision, threads=threads, device="cpu")
            try:
                seconds = best_seconds(lambda b=backend, f=feeds: b.run(f), repeats)
                outputs = backend.run(feeds)
                runs_in = computes_in(backend)
            finally:
                backend.close()
            error = None
            if kind == "openvino":
                reference = reference or outputs  # OpenVINO f32 comes first
                error = max(relative_errors(reference, outputs).values())
            rate = gflop[name] / seconds
            rows.append({
                "label": f"{name} · {config_label(kind, precision, runs_in)}", "seconds": seconds, "stage": name,
                "backend": kind, "precision": runs_in, "GFLOP": gflop[name], "GFLOP/s": rate,
                "% of sustained peak": 100 * rate / peak_of(peaks, runs_in),
                "% of theoretical peak": 100 * rate / peak_of(peaks, runs_in, "theoretical"),
                "error vs f32": error,
            })
    return rows


NETWORK_STAGES = ("encoder", "generator", "diffcam", "suppressor")


def peak_of(peaks: dict, precision: str, kind: str = "sustained") -> float:
    """The peak ("sustained" or "theoretical") a stage computing in `precision` is compared with: FP32's
    where the machine has no figure for that precision."""
    prefix = "" if kind == "sustained" else "theoretical "
    return peaks[prefix + precision] or peaks[prefix + "fp32"]


def least_seconds(gflop: dict[str, float], peaks: dict, precisions: dict[str, str]) -> float:
    """The `network` pipeline's time if every stage ran at the theoretical peak of the precision it computes
    in (stage → "fp32"/"bf16"): no backend on this machine can go below it (short of Winograd-like savings)."""
    return sum(gflop[stage] / peak_of(peaks, precisions[stage], "theoretical") for stage in NETWORK_STAGES)


def end_to_end_rows(engines: Path, image: np.ndarray, threads: int | None, gflop: dict[str, float], peaks: dict,
                    rounds: int = 2) -> list[dict]:
    """One face through the whole pipeline per CPU config: network and EOGI interleaved (median of
    `rounds` each after a warm-up), ours/EOGI, the output's error against ONNX Runtime FP32, and the least
    time the machine allows the network pipeline (`least_seconds`; gflop per stage for one edit)."""
    from deghost.runtime.backends.openvino import relative_errors
    from deghost.runtime.pipeline import Pipeline

    rows, outputs = [], {}
    for kind, precision in CONFIGS:
        with Pipeline.load(engines, backend=kind, precision=precision, threads=threads, device="cpu") as pipe:
            outputs[kind, precision] = pipe.edit([image], suppress=["network", "eogi"]).outputs  # warm-up
            seconds = {"network": [], "eogi": []}
            for index in range(rounds):
                for mode in ("network", "eogi") if index % 2 == 0 else ("eogi", "network"):
                    seconds[mode].append(timed(pipe.edit, [image], suppress=mode)[0])
            reference = outputs[CONFIGS[0]]
            error = max(relative_errors({m: reference[m]}, {m: outputs[kind, precision][m]})[m] for m in reference)
            network, eogi = statistics.median(seconds["network"]), statistics.median(seconds["eogi"])
            precisions = {stage: described.split(" ")[-1] for stage, described in pipe.describe().items()}
            rows.append({
                "label": f"network · {kind} {precision}", "seconds": network, "backend": f"{kind} {precision}",
                "network s/image": network, "least s at theoretical peak": least_seconds(gflop, peaks, precisions),
                "EOGI s/image": eogi, "ours/EOGI": network / eogi,
                "output error vs ORT fp32": error,
                "stages": ", ".join(f"{stage} {p}" for stage, p in precisions.items()),
            })
    return rows


def add_cpu_rows(report, preset: str, peaks: dict, stages: list[dict], end_to_end: list[dict]) -> None:
    """The per-stage and end-to-end tables of the CPU backends (titles name the peaks they divide by)."""
    peak_text = (f"sustained fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16'] or 0:.0f} GFLOP/s; theoretical fp32 "
                 f"{peaks['theoretical fp32']:.0f}, bf16 {peaks['theoretical bf16'] or 0:.0f} GFLOP/s")
    for row in stages:
        report.add(f"CPU backends per stage, preset {preset}, batch 1 ({peak_text})", row)
    for row in end_to_end:
        report.add(f"CPU backends end to end, preset {preset}, one face, network vs EOGI", row)


def peak_note(peaks: dict) -> str:
    return (f"CPU peak: theoretical = {peaks['derivation']} (the clock measured with every core running a chain "
            "of dependent adds, boost included; the nominal /proc/cpuinfo clock where that cannot run); sustained = "
            "the best 2048² matmul (OpenVINO, and PyTorch for fp32 in the full benchmark). Shares above 100 % of "
            "either mean the backend does fewer operations than the direct-convolution count (Winograd).")


BF16_NOTE = ("bf16 error = max|bf16 − f32| / max|f32| per stage (OpenVINO, seeded example inputs); a stage whose "
             "error exceeds its bound (runtime/backends/openvino.py BF16_BOUNDS) runs f32: its bf16 row reads "
             "'bf16 → fp32 (over bound)'.")
