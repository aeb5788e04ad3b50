"""Peak memory per backend: ONNX Runtime (the torch-free runtime, with and without its CPU memory
arena) and the PyTorch eager reference, each with MAResU-Net and with EOGI, editing one face three
times at batch 1.

Every backend × mode runs in a fresh child process (`benchmarks/memory_probe.py`): allocators keep
their pools, so the high-water mark of a process that has already run a pipeline measures nothing.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.memory_probe import BACKENDS
from deghost.manifest import Manifest

REPO = Path(__file__).resolve().parent.parent
MODES = ("network", "eogi")
PROBE_TIMEOUT_S = 600  # ffhq1024 on 2 CPU cores: about a minute per probe; a child past this fails the test


def run_probe(engines: Path, backend: str, suppress: str, threads: int) -> dict:
    """The child's JSON line; a child that fails or hangs fails the benchmark with its stderr."""
    command = [sys.executable, "-m", "benchmarks.memory_probe", "--engines", str(engines), "--backend", backend,
               "--suppress", suppress, "--threads", str(threads)]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else error.stderr
        pytest.fail(f"{' '.join(command)} ran past {PROBE_TIMEOUT_S} s and was killed; stderr:\n{stderr or ''}")
    if done.returncode != 0 or not done.stdout.strip():
        pytest.fail(f"{' '.join(command)} exited {done.returncode}; stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_peak_memory_per_backend(benchmark, torch_module, engines, report):
    engines = Path(engines).resolve()
    preset = Manifest.load(engines).artifacts[0].preset
    threads = torch_module.get_num_threads()
    probes = []

    def probe_all():
        for backend, mode in itertools.product(BACKENDS, MODES):  # one after another: each has the cores
            probes.append(run_probe(engines, backend, mode, threads))

    benchmark.pedantic(probe_all, rounds=1, iterations=1)
    benchmark.extra_info["memory"] = probes
    title = f"Peak memory per backend, preset {preset}, batch 1, one face edited {probes[0]['edits']} times"
    for probe in probes:
        report.add(title, {
            "label": f"{probe['backend']} · {probe['suppress']}",
            "MiB after imports": probe["after_imports_mib"], "MiB after load": probe["after_load_mib"],
            "peak MiB": probe["peak_mib"], "peak − after imports MiB": probe["peak_mib"] - probe["after_imports_mib"],
            "first edit s": probe["first_edit_seconds"], "later edits s": probe["later_edit_seconds"],
        }, chart="peak MiB")
    report.notes.append(
        f"Peak memory: each row is a fresh process ({threads} threads) that imports its backend (ONNX Runtime "
        "without torch), loads the pipeline (opens the stages' sessions / builds the PyTorch graphs) and edits "
        f"one face {probes[0]['edits']} times; peak = the process's peak resident set (VmHWM), 'later edits s' = "
        "the median of the edits after the first; arena = Pipeline(memory_arena=True), `--memory-arena`. "
        "No PyTorch CUDA row: the reference pipeline runs on CPU tensors only, so GPU memory "
        "(torch.cuda.max_memory_allocated) is not measured."
    )
    assert sorted((p["backend"], p["suppress"]) for p in probes) == sorted(itertools.product(BACKENDS, MODES))
    assert all(p["peak_mib"] >= p["after_load_mib"] >= p["after_imports_mib"] > 0 for p in probes)
    assert all(p["preset"] == preset and p["threads"] == threads for p in probes)
    assert not any(p["torch_imported"] for p in probes if p["backend"] == "onnxruntime")
