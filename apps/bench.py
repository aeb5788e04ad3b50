"""`deghost bench`: the paper's size and speed comparison, i.e. `pytest benchmarks --benchmark-only`.

The benchmarks are pytest-benchmark files in the source checkout's benchmarks/ folder (they are not
installed with the package), so this command runs pytest there with the options translated.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .exits import usage_error

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the checkout, for an editable or in-place install
BENCHMARKS = SOURCE_ROOT / "benchmarks"

DESCRIPTION = """\
Run the paper's comparison with pytest-benchmark: parameter counts (MAResU-Net 26,285,115 vs EOGI
174,196,615), the whole pipeline with MAResU-Net vs with EOGI (interleaved rounds, ratio, FLOPs,
extrapolated to 1000 images), per-stage latency per backend, and peak memory per backend.
Results go to .benchmarks/deghost/<preset>/ (untracked: the checkout stays clean), to --results-dir, or
with --save-results to the committed benchmarks/results/<preset>/, as results.json, results.md and
results.png with the machine named.
Weights are untrained (random, seeded) unless --engines points at a folder built from real ones:
the figures are sizes and speeds, which weights do not change."""

EPILOG = """\
examples:
  deghost bench                                   tiny preset, a few minutes on a CPU
  deghost bench --preset ffhq1024 --images 2 --rounds 2 --engines engines/ --save-results
                                                  the README's figures: into benchmarks/results/ffhq1024/
  deghost bench -- -k parameters                  anything after -- goes to pytest
"""


def add_bench_command(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench", help="the paper's parameter, speed and memory comparison (pytest benchmarks --benchmark-only)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", choices=("tiny", "ffhq1024"), default="tiny",
                        help="network sizes (default: %(default)s; ffhq1024 = the paper's, slow on a CPU)")
    parser.add_argument("--images", type=int, metavar="N",
                        help="images per round of the end-to-end comparison (default: 4 on a CPU, 1000 on a GPU)")
    parser.add_argument("--rounds", type=int, metavar="N", help="interleaved rounds of ours vs EOGI (default: 3)")
    parser.add_argument("--engines", type=Path, metavar="DIR",
                        help="an existing engine folder (manifest.json) instead of building untrained ONNX graphs")
    parser.add_argument("--results-dir", type=Path, metavar="DIR",
                        help="where the results files go (default: .benchmarks/deghost/<preset>/ of the checkout, "
                        "untracked)")
    parser.add_argument("--save-results", action="store_true",
                        help="write them into the committed benchmarks/results/<preset>/ (the README's figures)")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="-- PYTEST_ARGS",
                        help="extra pytest arguments after --")
    parser.set_defaults(run=run_bench)
    return parser


def pytest_command(args: argparse.Namespace) -> list[str]:
    command = [sys.executable, "-m", "pytest", str(BENCHMARKS), "--benchmark-only", "--preset", args.preset]
    for option, value in (("--images", args.images), ("--rounds", args.rounds), ("--engines", args.engines),
                          ("--results-dir", args.results_dir)):
        if value is not None:
            command += [option, str(value.resolve() if isinstance(value, Path) else value)]
    if args.save_results:
        command.append("--save-results")
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    return command + extra


def run_bench(args: argparse.Namespace) -> int:
    if not (BENCHMARKS / "conftest.py").is_file():
        return usage_error("bench", f"no benchmarks/ beside the installed package ({SOURCE_ROOT}); the benchmarks "
                           "live in the source checkout: clone it and run `pip install -e \".[dev]\"` there")
    for option in ("images", "rounds"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            return usage_error("bench", f"--{option} must be at least 1")
    return subprocess.call(pytest_command(args), cwd=SOURCE_ROOT)
