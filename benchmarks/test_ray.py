"""deghost on Ray, on this machine: the Ray Data job with 1 and 2 actors against the local folder mode,
and the Ray Serve service's latency and throughput under a bounded concurrent loopback load.

    python -m pytest benchmarks/test_ray.py --benchmark-only \\
        --engines DIR -s [--images 8] [--rounds 2] [--save-results]

Each round runs the three batch modes back to back (order rotating, so machine drift spreads over
them) on a fresh output folder and times the whole job as a user sees it: opening the engines,
Ray's scheduling and actor start-up included, the cluster's own start-up not (a real cluster is
already up). Results are ratios and rates measured side by side; nothing here asserts a speed. Each
ray/*.json (in .benchmarks/deghost/, or with --save-results the committed benchmarks/results/) begins with
the machine it was measured on (benchmarks.machine.describe) and Ray's version.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.conftest import results_folder
from benchmarks.machine import describe
from benchmarks.pipelines import faces

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'deghost[ray]'")

CLUSTER_CPUS = 2  # this machine's cores; more actors than cores only measures contention
CLIENTS, REQUESTS_PER_CLIENT = 4, 4  # the service load: bounded in count, every request waited for


@pytest.fixture(scope="module")
def ray_cluster():
    from deghost.runtime.ray_cluster import LOCAL_HOST

    ray.init(_node_ip_address=LOCAL_HOST, include_dashboard=False, num_cpus=CLUSTER_CPUS, log_to_driver=False)
    yield ray
    ray.shutdown()


def _image_folder(folder: Path, count: int, side: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rgb in enumerate(faces(count)):
        paths.append(folder / f"face{i:03d}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA),
                                                 cv2.COLOR_RGB2BGR))
    return paths


def _save(config: pytest.Config, name: str, data: dict) -> None:
    """The results with the machine they were measured on (and Ray's version) first, in results_folder's "ray"."""
    folder = results_folder(config, "ray")
    folder.mkdir(parents=True, exist_ok=True)
    machine = {**describe(), "ray": ray.__version__}
    (folder / f"{name}.json").write_text(json.dumps({"machine": machine, **data}, indent=2) + "\n")


def test_ray_data_vs_local_folder_mode(benchmark, request, ray_cluster, engines, tmp_path):
    from deghost.apps.edit.folder import FolderRun, run_folder
    from deghost.apps.edit.ray_batch import run_folder_ray
    from deghost.runtime.pipeline import Pipeline

    n = request.config.getoption("--images") or 8
    rounds = request.config.getoption("--rounds")
    side = Pipeline.load(engines).preset.image_size
    inputs = _image_folder(tmp_path / "in", n, side)

    def local(out: Path) -> None:
        with Pipeline.load(engines, threads=CLUSTER_CPUS) as pipe:
            run_folder(pipe, FolderRun(inputs, out), progress=False)

    def on_ray(workers: int):
        return lambda out: run_folder_ray(engines, FolderRun(inputs, out), ray_workers=workers, progress=False)

    modes = {"local folder mode": local, "Ray Data, 1 actor": on_ray(1), "Ray Data, 2 actors": on_ray(2)}
    seconds = {name: [] for name in modes}

    def rotating_rounds():
        names = list(modes)
        for index in range(rounds):
            for name in names[index % 3:] + names[: index % 3]:
                out = tmp_path / f"out_{index}_{len(seconds[name])}_{name.split()[0]}{name[-7]}"
                start = time.perf_counter()
                modes[name](out)
                seconds[name].append(time.perf_counter() - start)
                assert len(list(out.iterdir())) == n  # every image written

    benchmark.pedantic(rotating_rounds, rounds=1, iterations=1)
    local_s = statistics.median(seconds["local folder mode"])
    rows = {name: {"median_s": statistics.median(s), "images_per_s": n / statistics.median(s),
                   "time_vs_local": statistics.median(s) / local_s, "seconds": s} for name, s in seconds.items()}
    benchmark.extra_info.update(images=n, rounds=rounds, side=side, modes=rows)
    _save(request.config, "ray_data",
          {"images": n, "rounds": rounds, "side": side, "cpus": CLUSTER_CPUS, "modes": rows})
    print(f"\nRay Data vs local folder mode, {n} images of {side}², {rounds} rounds, {CLUSTER_CPUS} CPUs:")
    for name, row in rows.items():
        print(f"  {name:20s} {row['median_s']:7.1f} s  {row['images_per_s']:.3f} images/s  "
              f"time ×{row['time_vs_local']:.3f} of local")


def test_service_latency_and_throughput(benchmark, request, ray_cluster, engines, tmp_path):
    from ray import serve

    from deghost.apps.serve.app import start_service
    from deghost.apps.serve.service import encode_png
    from deghost.runtime.pipeline import Pipeline

    side = Pipeline.load(engines).preset.image_size
    bodies = [encode_png(cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)) for rgb in faces(CLIENTS)]
    url = start_service(engines, replicas=1, port=8765, threads=CLUSTER_CPUS, max_batch=4, queue_limit=16,
                        cpus_per_replica=CLUSTER_CPUS, aligned=True)
    latencies, statuses, batches = [], [], []
    lock = threading.Lock()

    def client(index: int) -> None:
        for _ in range(REQUESTS_PER_CLIENT):
            start = time.perf_counter()
            request = urllib.request.Request(f"{url}/edit", data=bodies[index], method="POST")
            try:
                with urllib.request.urlopen(request, timeout=300) as answer:
                    answer.read()
                    status, batch = answer.status, int(answer.headers["X-Deghost-Batch-Size"])
            except urllib.error.HTTPError as error:
                status, batch = error.code, 0
            with lock:
                latencies.append(time.perf_counter() - start)
                statuses.append(status)
                batches.append(batch)

    def load():
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=900)

    try:
        urllib.request.urlopen(urllib.request.Request(f"{url}/edit", data=bodies[0], method="POST"),
                               timeout=300).read()  # warm-up: first-call allocations
        started = time.perf_counter()
        benchmark.pedantic(load, rounds=1, iterations=1)
        wall = time.perf_counter() - started
    finally:
        serve.shutdown()
    ms = sorted(1e3 * s for s in latencies)
    result = {
        "clients": CLIENTS, "requests": len(ms), "ok": statuses.count(200), "status_503": statuses.count(503),
        "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
        "throughput_per_s": len(ms) / wall, "mean_batch": statistics.mean(b for b in batches if b) if any(batches)
        else 0.0, "side": side,
    }
    benchmark.extra_info.update(result)
    _save(request.config, "serve", result)
    print(f"\nRay Serve, 1 replica, {CLIENTS} concurrent loopback clients × {REQUESTS_PER_CLIENT} requests "
          f"({side}²): p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, "
          f"{result['throughput_per_s']:.3f} requests/s, mean batch {result['mean_batch']:.2f}, "
          f"{result['status_503']} × 503")
