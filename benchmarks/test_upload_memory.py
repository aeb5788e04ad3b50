"""Peak resident memory of the largest accepted upload in the service and the demo, and of 4 concurrent
uploads the service refuses (issue 25): each front end in a fresh child (benchmarks/upload_memory_probe.py).

The bound it states: 4 concurrent largest uploads cost the service at most UPLOADS_BOUND_MIB over the
opened pipeline (4 decoded photos of 120 MB, their face searches and one batch of 4 faces); 4 refused
30000×30000 PNGs cost at most REFUSED_BOUND_MIB (no pixel buffer: each would be 2,575 MiB).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROBE_TIMEOUT_S = 900
UPLOADS_BOUND_MIB = 2048
REFUSED_BOUND_MIB = 64


def probe(engines: Path, front: str, uploads: int = 4) -> dict:
    command = [sys.executable, "-m", "benchmarks.upload_memory_probe", "--engines", str(engines), "--front", front,
               "--uploads", str(uploads)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    if done.returncode != 0 or not done.stdout.strip():
        pytest.fail(f"{' '.join(command)} exited {done.returncode}; stderr:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_peak_memory_of_the_largest_uploads(benchmark, engines, report):
    engines = Path(engines).resolve()
    probes = []

    def probe_all():
        probes.extend([probe(engines, "service"), probe(engines, "service-refused"), probe(engines, "demo", 1)])

    benchmark.pedantic(probe_all, rounds=1, iterations=1)
    benchmark.extra_info["memory"] = probes
    for row in probes:
        report.add(f"Peak memory of the largest uploads, preset {row['preset']}", {
            "label": f"{row['front']} × {row['uploads']}", "upload MB": row["upload_bytes"] / 1e6,
            "MiB after load": row["after_load_mib"], "peak MiB": row["peak_mib"],
            "peak − after load MiB": row["peak_mib"] - row["after_load_mib"], "s": row["seconds"],
        }, chart="peak − after load MiB")
    service, refused, _ = probes
    assert refused["answers"] == ["ClientError"] * 4
    assert refused["peak_mib"] - refused["after_load_mib"] < REFUSED_BOUND_MIB
    assert service["peak_mib"] - service["after_load_mib"] < UPLOADS_BOUND_MIB
