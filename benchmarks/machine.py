"""What machine a figure comes from, and how fast it can go: the theoretical FMA peak and the best
sustained kernel, per precision (`cpu_peaks`); a PyTorch matmul for the GPU."""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import threading
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


# -- the CPU's peak: theoretical (vector FMA width × cores × clock) and the best sustained kernel ------

def cpu_flags() -> tuple[str, set[str], int, float]:
    """(vendor, flags, family, MHz) of CPU 0 from /proc/cpuinfo (empty values where it is absent)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return (fields.get("vendor_id", ""), set(fields.get("flags", "").split()), int(fields.get("cpu family", 0) or 0),
            float(fields.get("cpu MHz", 0) or 0))


AMX_BF16_FLOP_PER_CYCLE = 1024  # Intel: one AMX tile unit per core, 1024 BF16 operations per cycle (512 FMAs)


# x86-64 machine code, System V ABI: for rdi iterations, 16 dependent `add rax, rdx` (1 cycle of latency
# each on every x86-64 core; unlike adds of an immediate, no core folds them away), then dec/jnz, which
# run beside the chain. Returns rax = 16 × iterations, so a caller can check that the chain really ran.
ADDS_PER_ITERATION = 16
_ADD_CHAIN_CODE = (bytes.fromhex("4889f9" "31c0" "ba01000000")  # mov rcx, rdi; xor eax, eax; mov edx, 1
                   + bytes.fromhex("4801d0") * ADDS_PER_ITERATION  # add rax, rdx
                   + bytes.fromhex("48ffc9" "75cb" "c3"))  # dec rcx; jnz (back 53 bytes); ret


def add_chain() -> tuple[object, mmap.mmap] | None:
    """(function(iterations) → 16 × iterations, its executable page), or None where such code cannot run
    (not x86-64, or the system refuses executable memory)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not hasattr(mmap, "PROT_EXEC"):
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError):
        return None
    page.write(_ADD_CHAIN_CODE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    # CFUNCTYPE releases the GIL during the call, so one thread per core runs at once.
    return ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(address), page


def measured_clock_ghz(iterations: int = 30_000_000, rounds: int = 3) -> float | None:
    """The cores' clock with all of them busy, in GHz (the clock a whole-machine kernel gets, boost
    included): every core runs the dependent-add chain at once, one add per cycle; the best of `rounds`.
    None where the chain cannot run (see `add_chain`)."""
    chain = add_chain()
    if chain is None:
        return None
    function, _page = chain
    cores = os.cpu_count() or 1

    def run(seconds: list[float], index: int) -> None:
        start = time.perf_counter()
        function(iterations)
        seconds[index] = time.perf_counter() - start

    best = 0.0
    for _ in range(rounds):
        seconds = [0.0] * cores
        threads = [threading.Thread(target=run, args=(seconds, i)) for i in range(cores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        best = max(best, ADDS_PER_ITERATION * iterations / max(seconds) / 1e9)  # the slowest core bounds all
    return best


def theoretical_peak_gflops(clock_ghz: float | None = None) -> dict:
    """FP32 and BF16 GFLOP/s = cores × clock × FLOP per cycle, with how it was derived.

    FLOP per cycle (FP32) = 2 (an FMA) × FP32 lanes per FMA × 2 FMA pipes (every x86 server core since
    Haswell). AMD Zen 2-4 (families 23, 25) execute 512-bit instructions on 256-bit pipes, so their lanes
    are 8 whatever the ISA. BF16 dot products (avx512_bf16) do twice FP32's multiply-adds per lane; a core
    with AMX (amx_bf16: Intel Sapphire Rapids and later) multiplies BF16 tiles at 1024 FLOP per cycle.
    clock_ghz: the measured all-core clock (`measured_clock_ghz`); None: the nominal one /proc/cpuinfo
    reports, which boost can exceed (then a kernel can beat the "theoretical" figure).
    """
    vendor, flags, family, mhz = cpu_flags()
    clock_text = f"{clock_ghz:.2f} GHz measured all-core" if clock_ghz else f"{mhz / 1e3:.2f} GHz nominal"
    mhz = clock_ghz * 1e3 if clock_ghz else mhz
    bits = 512 if "avx512f" in flags else 256 if "avx2" in flags and "fma" in flags else 128
    if vendor == "AuthenticAMD" and family in (23, 25):
        bits = min(bits, 256)
    per_cycle = 2 * bits // 32 * 2
    cores = os.cpu_count() or 1
    fp32 = cores * mhz / 1e3 * per_cycle
    if "amx_bf16" in flags:
        bf16 = cores * mhz / 1e3 * AMX_BF16_FLOP_PER_CYCLE
        how = f"bf16 on AMX tiles {AMX_BF16_FLOP_PER_CYCLE} FLOP/cycle"
    elif "avx512_bf16" in flags:
        bf16, how = 2 * fp32, "bf16 dot products 2× fp32"
    else:
        bf16, how = None, "no bf16 instructions"
    return {"fp32": fp32, "bf16": bf16, "derivation": f"{cores} cores × {clock_text} × {per_cycle} FLOP/cycle "
            f"({bits}-bit FMA × 2 pipes); {how}"}


def openvino_matmul_gflops(precision: str, size: int = 2048, repeats: int = 5) -> float | None:
    """Best GFLOP/s of a size² FP32 matmul compiled by OpenVINO at `precision` ("fp32"/"bf16"); None
    without OpenVINO. The best of several runs: the sustained rate of a kernel that fits the machine."""
    try:
        import numpy as np
        import openvino as ov
        from openvino import opset13 as ops
    except ImportError:
        return None
    a = ops.parameter([size, size], ov.Type.f32, name="a")
    b = ops.constant(np.random.default_rng(0).standard_normal((size, size), dtype=np.float32))
    model = ov.Model([ops.matmul(a, b, False, False)], [a])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}
                                                      [precision], "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    feed = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    request.infer([feed])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer([feed])
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def cpu_peaks(torch_module=None) -> dict:
    """{"fp32": GFLOP/s, "bf16": GFLOP/s or None, ...}: the best sustained kernel per precision (a large
    matmul on OpenVINO, and on PyTorch for FP32), beside the theoretical figures."""
    theory = theoretical_peak_gflops(measured_clock_ghz())
    fp32 = [openvino_matmul_gflops("fp32")]
    if torch_module is not None:
        fp32.append(matmul_peak_gflops(torch_module))
    bf16 = openvino_matmul_gflops("bf16") if theory["bf16"] else None
    return {"fp32": max(v for v in fp32 if v), "bf16": bf16, "theoretical fp32": theory["fp32"],
            "theoretical bf16": theory["bf16"], "derivation": theory["derivation"]}
