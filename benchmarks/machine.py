"""What machine a figure comes from, and how fast it can go (a large matmul = the practical peak)."""

from __future__ import annotations

import os
import platform
import time


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(torch_module=None) -> dict:
    """CPU, cores, memory, GPU (if torch sees one) and library versions."""
    machine = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
    }
    if torch_module is not None:
        machine["torch"] = torch_module.__version__
        machine["torch_threads"] = torch_module.get_num_threads()
        if torch_module.cuda.is_available():
            machine["gpu"] = torch_module.cuda.get_device_name(0)
    try:
        import onnxruntime

        machine["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return machine


def matmul_peak_gflops(torch_module, size: int = 4096, repeats: int = 3, device: str = "cpu",
                       dtype=None) -> float:
    """Achieved GFLOP/s of a size² matmul: the ceiling every stage is compared with."""
    dtype = dtype or torch_module.float32
    a = torch_module.randn(size, size, device=device, dtype=dtype)
    b = torch_module.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up

    def sync():
        if device != "cpu":
            torch_module.cuda.synchronize()

    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9
