"""Seconds from click to result in `deghost demo`, per suppress mode, as a visitor sees them: the real
command serves ENGINES on 127.0.0.1, Chromium uploads the bundled astronaut photo and clicks run, and
the clock stops when the page shows the finished edit's timings.

    python -m benchmarks.demo_clicks --engines DIR [--precision bf16] [--clicks 2]

Writes benchmarks/results/demo/clicks_<preset>_<precision>.json (the machine, first and later clicks).
Needs the demo extra and Debian's chromium. One click per mode is warm-up (the stages open lazily).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe
from deghost.files import atomic_write_bytes
from deghost.manifest import Manifest
from tests.helpers.demo_page import choose_modes, demo_server, run_and_wait, upload

REPO = Path(__file__).resolve().parent.parent
PHOTO = REPO / "tests" / "data" / "images" / "astronaut.png"
RESULTS = REPO / "benchmarks" / "results" / "demo"
MODES = {"ours": {"ours"}, "Poisson": {"Poisson"}, "EOGI": {"EOGI"}, "all three": {"ours", "EOGI", "Poisson"}}


def measure(engines: Path, options: list[str], clicks: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch, demo_server(engines, Path(scratch) / "server.log", *options) as url:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url, timeout=120_000)
                page.wait_for_selector("#run", timeout=120_000)
                upload(page, PHOTO)
                for name, labels in MODES.items():
                    choose_modes(page, labels)
                    seconds[name] = []
                    for _ in range(clicks + 1):  # the first opens the mode's stages
                        start = time.perf_counter()
                        run_and_wait(page)
                        seconds[name].append(time.perf_counter() - start)
                    print(name, [round(s, 2) for s in seconds[name]], flush=True)
            finally:
                browser.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=Path, required=True)
    parser.add_argument("--precision", default="auto", help="passed to deghost demo (default: auto)")
    parser.add_argument("--clicks", type=int, default=2, help="timed clicks per mode after its first (default: 2)")
    args = parser.parse_args()
    seconds = measure(args.engines, ["--precision", args.precision], args.clicks)
    result = {
        "machine": describe(), "preset": Manifest.load(args.engines).artifacts[0].preset,
        "precision": args.precision, "photo": PHOTO.name,
        "first click s": {mode: runs[0] for mode, runs in seconds.items()},
        "median later click s": {mode: statistics.median(runs[1:]) for mode, runs in seconds.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"clicks_{result['preset']}_{args.precision}.json"
    atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())
    print(json.dumps(result["median later click s"], indent=2), f"\nwritten: {path}")


if __name__ == "__main__":
    main()
