"""A short side-by-side of the CPU backends on an engine folder, when the full benchmark cannot run:
per stage (best of 2 after a warm-up) and one face end to end, network and EOGI, ONNX Runtime fp32 vs
OpenVINO f32 vs bf16; GFLOP per stage from the committed results.json; added to the results files.

    python -m benchmarks.cpu_quick --engines DIR [--preset ffhq1024]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.conftest import RESULTS
from benchmarks.cpu_backends import BF16_NOTE, add_cpu_rows, end_to_end_rows, peak_note, stage_rows
from benchmarks.machine import cpu_peaks, describe
from benchmarks.pipelines import faces
from benchmarks.report import Report
from deghost.manifest import Manifest

STAGES = ("encoder", "generator", "diffcam", "suppressor", "deghosting")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", required=True, type=Path, help="a folder built with deghost export")
    parser.add_argument("--preset", default="ffhq1024", help="the results folder whose GFLOP counts are used")
    args = parser.parse_args()
    folder = RESULTS / args.preset
    earlier = json.loads((folder / "results.json").read_text())
    gflop = {row["stage"]: row["GFLOP/image"] for rows in earlier["sections"].values() for row in rows
             if "GFLOP/image" in row and "stage" in row}
    gflop["generator"] *= 2  # the rows are per image at batch 1; one edit renders 2
    peaks = cpu_peaks()
    print("peaks", peaks, flush=True)
    stages = stage_rows(Manifest.load(args.engines), args.preset, list(STAGES), gflop, peaks, threads=None, repeats=1)
    end_to_end = end_to_end_rows(args.engines.resolve(), faces(1)[0], None, gflop, peaks, rounds=1)
    for row in stages + end_to_end:
        print(row, flush=True)
    report = Report(describe())
    add_cpu_rows(report, args.preset, peaks, stages, end_to_end)
    report.notes += ["CPU backends: measured with `python -m benchmarks.cpu_quick` (one timed run per row after a "
                     "warm-up: compare rows of one table only).", peak_note(peaks), BF16_NOTE]
    print("\n".join(str(p) for p in report.write(folder)))


if __name__ == "__main__":
    main()
