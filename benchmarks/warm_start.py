"""Start-up cost of one photo (issue 28): wall time of `deghost edit` on one photo with the compiled-model
cache empty (cold) and filled (warm), beside the steady-state time per photo in one process; the same for
a service replica (start to first answer) — all in one run, each case a fresh process.

    python -m benchmarks.warm_start --engines DIR [--precision bf16]
        [--before SRC]   # SRC: a checkout of the code before the cache (e.g. `git archive main`), measured too

Writes benchmarks/results/warm_start/warm_start_<preset>_<precision>.json (the machine and every figure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe
from deghost.files import atomic_write_bytes
from deghost.manifest import Manifest

REPO = Path(__file__).resolve().parent.parent
PHOTO = REPO / "tests" / "data" / "images" / "astronaut.png"
RESULTS = REPO / "benchmarks" / "results" / "warm_start"
PACKAGE_DIRS = {"deghost": "deghost", "training": "training", "export": "export", "runtime": "runtime"}

# One process: open the pipeline, edit the photo `repeat` times; prints the seconds of each edit as JSON.
STEADY = """
import json, sys, time
from deghost.runtime.images import read_image
from deghost.runtime.pipeline import Pipeline
photo = read_image(sys.argv[2]).rgb
pipe = Pipeline.load(sys.argv[1], backend="openvino", precision=sys.argv[3], device="cpu")
seconds = []
for _ in range(int(sys.argv[4])):
    start = time.perf_counter()
    pipe.edit_photo(photo, "smile", 20.0, "network")
    seconds.append(time.perf_counter() - start)
print(json.dumps(seconds))
"""

# One service replica as `deghost serve` makes it (EditService), constructed in a fresh process, and its
# first answer through the service's own edit path; Ray's actor start and HTTP are not included.
REPLICA = """
import sys, time
started = time.perf_counter()
from deghost.runtime.images import read_image
try:  # the layout before the applications moved to deghost.apps (--before), else this checkout's
    from deghost.runtime.serve_app import EditService
    from deghost.runtime.service import EditParams, edit_many
except ImportError:
    from deghost.apps.serve.app import EditService
    from deghost.apps.serve.service import EditParams, edit_many
service = EditService(sys.argv[1], backend="openvino", precision=sys.argv[3], device="cpu")
answer = edit_many(service.pipe, [read_image(sys.argv[2]).rgb], EditParams("smile", 20.0, "network"))[0]
assert answer.ndim == 3, answer
print(time.perf_counter() - started)
"""


# `deghost` as a fresh process, in this checkout's layout or in the one before the applications moved (--before).
CLI_MAIN = """
import sys
try:  # the old module first: this checkout's editable install would also answer deghost.apps under --before
    from deghost.cli import main
except ImportError:
    from deghost.apps.cli import main
sys.exit(main(sys.argv[1:]))
"""


def python_path(source: Path | None) -> str:
    """PYTHONPATH that makes `import deghost` load `source` (a checkout laid out as the repository), or ours."""
    if source is None:
        return os.environ.get("PYTHONPATH", "")
    layout = Path(tempfile.mkdtemp(prefix="deghost-before-"))
    shutil.copytree(source / "deghost", layout / "deghost")
    for package, folder in PACKAGE_DIRS.items():
        if package != "deghost":
            (layout / "deghost" / package).symlink_to((source / folder).resolve())
    return str(layout)


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """(seconds, stdout) of `command`, run outside the checkout (so PYTHONPATH, not the folder, says which code)."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False,
                          cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def edit_wall(engines: Path, precision: str, env: dict[str, str]) -> float:
    """Seconds of `deghost edit PHOTO` in a fresh process, start to exit."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-c", CLI_MAIN,
                   "edit", str(PHOTO), "--out", out, "--engines", str(engines),
                   "--backend", "openvino", "--device", "cpu", "--precision", precision, "--quiet"]
        return timed(command, env)[0]


class _Figures(dict):
    """The figures, each printed as it is measured (a long run shows its progress)."""

    def __setitem__(self, name, value):
        print(f"{name}: {value}", flush=True)
        super().__setitem__(name, value)


def measure(engines: Path, precision: str, before: Path | None, steady_runs: int) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="deghost-cache-"))
    ours = {**os.environ, "DEGHOST_CACHE_DIR": str(cache)}
    ours.pop("DEGHOST_NO_CACHE", None)
    figures = _Figures()
    try:
        if before is not None:
            old = {**os.environ, "PYTHONPATH": python_path(before)}
            figures["before: edit one photo s"] = edit_wall(engines, precision, old)
            figures["before: replica start to first answer s"] = float(
                timed([sys.executable, "-c", REPLICA, str(engines), str(PHOTO), precision], old)[1])
        figures["cold: edit one photo s"] = edit_wall(engines, precision, ours)  # fills the cache
        figures["cache MB"] = round(sum(f.stat().st_size for f in cache.iterdir()) / 1e6, 1)
        figures["warm: edit one photo s"] = edit_wall(engines, precision, ours)
        figures["warm: replica start to first answer s"] = float(
            timed([sys.executable, "-c", REPLICA, str(engines), str(PHOTO), precision], ours)[1])
        off = {**ours, "DEGHOST_NO_CACHE": "1"}
        figures["cache off: replica start to first answer s"] = float(
            timed([sys.executable, "-c", REPLICA, str(engines), str(PHOTO), precision], off)[1])
        steady = json.loads(timed([sys.executable, "-c", STEADY, str(engines), str(PHOTO), precision,
                                   str(steady_runs)], ours)[1])
        figures["steady state: edits in one process s"] = steady
        figures["steady state: per photo s"] = min(steady[1:])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    per_photo = figures["steady state: per photo s"]
    for name in list(figures):
        if name.endswith(" s") and not name.startswith("steady"):
            figures[f"{name[:-2]} / steady"] = round(figures[name] / per_photo, 2)
    return dict(figures)


def cold_pairs(engines: Path, precision: str, before: Path, pairs: int) -> dict:
    """`deghost edit` on one photo, before and cold (an empty cache each time), alternately `pairs` times:
    on a shared host one pair is noise, the medians of several compare."""
    old = {**os.environ, "PYTHONPATH": python_path(before)}
    seconds: dict[str, list[float]] = {"before": [], "cold": []}
    for _ in range(pairs):
        seconds["before"].append(edit_wall(engines, precision, old))
        cache = Path(tempfile.mkdtemp(prefix="deghost-cache-"))
        try:
            seconds["cold"].append(edit_wall(engines, precision, {**os.environ, "DEGHOST_CACHE_DIR": str(cache)}))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        print(seconds, flush=True)
    return {"edit one photo s, alternating": seconds,
            "median cold / median before": round(statistics.median(seconds["cold"])
                                                 / statistics.median(seconds["before"]), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=Path, required=True)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with (its repository root)")
    parser.add_argument("--steady-runs", type=int, default=4, help="edits in the steady-state process (default: 4)")
    parser.add_argument("--cold-pairs", type=int, metavar="N",
                        help="instead: only before and cold, alternately N times (needs --before)")
    args = parser.parse_args()
    if args.cold_pairs:
        figures = cold_pairs(args.engines, args.precision, args.before, args.cold_pairs)
    else:
        figures = measure(args.engines, args.precision, args.before, args.steady_runs)
    result = {"machine": describe(), "preset": Manifest.load(args.engines).artifacts[0].preset,
              "precision": args.precision, "photo": PHOTO.name, "measured": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                         time.gmtime()),
              "figures": figures}
    RESULTS.mkdir(parents=True, exist_ok=True)
    kind = "cold_vs_before" if args.cold_pairs else "warm_start"
    path = RESULTS / f"{kind}_{result['preset']}_{args.precision}.json"
    atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())
    print(json.dumps(figures, indent=2), f"\nwritten: {path}")


if __name__ == "__main__":
    main()
