"""Peak resident memory of the largest accepted upload, per front end, in this fresh process; one JSON line.

    python -m benchmarks.upload_memory_probe --engines DIR --front service|service-refused|demo [--uploads 4]

- service: `--uploads` concurrent requests as a replica runs them (decode_upload in threads, then one
  edit_many batch on the photo path) of the largest upload it accepts: a PNG of MAX_PIXELS (8000×5000),
  a grey canvas with one portrait, under MAX_UPLOAD_BYTES;
- service-refused: `--uploads` concurrent 30000×30000 PNGs (2.6 MB each), refused from their headers;
- demo: the same largest photo through the demo's session (read, then edit: one click at a time).

The peak is VmHWM (Linux), after the pipeline's stages are open (`after_load_mib`), so `peak − after load` is
what the uploads cost. A fresh process per front end, because allocators keep their pools.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FRONTS = ("service", "service-refused", "demo")
PORTRAIT = Path(__file__).resolve().parent.parent / "tests" / "data" / "images" / "astronaut.png"


def largest_accepted_png() -> bytes:
    """8000×5000 = MAX_PIXELS: grey, with the test portrait scaled to 1200 px near the middle."""
    import cv2
    import numpy as np

    from deghost.runtime.images import read_image
    from deghost.runtime.limits import MAX_PIXELS, MAX_UPLOAD_BYTES

    canvas = np.full((5000, 8000, 3), 128, np.uint8)
    assert canvas.shape[0] * canvas.shape[1] == MAX_PIXELS
    face = cv2.resize(read_image(PORTRAIT).rgb, (1200, 1200), interpolation=cv2.INTER_CUBIC)
    canvas[1900:3100, 3400:4600] = face
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    assert ok and encoded.size <= MAX_UPLOAD_BYTES, encoded.size
    return encoded.tobytes()


def probe(engines: str, front: str, uploads: int) -> dict:
    from benchmarks.memory_probe import status_mib
    from deghost.apps.serve.service import EditParams, decode_upload, edit_many
    from deghost.runtime.images import read_image
    from deghost.runtime.pipeline import Pipeline
    from tests.helpers.huge_images import black_png

    data = black_png(30000, 30000) if front == "service-refused" else largest_accepted_png()
    pipe = Pipeline.load(engines, backend="onnxruntime", device="cpu")
    pipe.prepare("network")
    pipe.edit_photo(read_image(PORTRAIT).rgb, suppress="network")  # every stage warm: counted in `after load`
    after_load = status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    started = time.perf_counter()
    answered: list = []
    if front == "demo":
        from deghost.apps.demo.session import DemoSession

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "largest.png"
            path.write_bytes(data)
            session = DemoSession(pipe)
            for _ in range(uploads):  # one click at a time: the demo's lock
                photo, _ = session.read(path)
                answered.append(session.edit(photo, "smile", 20.0, ["network"]).faces)
    else:
        def decode(_):
            try:
                return decode_upload(data)
            except ValueError as refused:
                return refused

        with ThreadPoolExecutor(uploads) as pool:
            photos = list(pool.map(decode, range(uploads)))
        accepted = [p for p in photos if not isinstance(p, ValueError)]
        answered = [type(p).__name__ for p in photos if isinstance(p, ValueError)]
        if accepted:
            answered += [type(a).__name__ for a in edit_many(pipe, accepted, EditParams(suppress="network"))]
    return {"front": front, "uploads": uploads, "upload_bytes": len(data), "preset": pipe.preset.name,
            "after_load_mib": after_load, "peak_mib": status_mib("VmHWM"),
            "seconds": time.perf_counter() - started, "answers": answered}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", required=True, help="engine folder with manifest.json")
    parser.add_argument("--front", required=True, choices=FRONTS)
    parser.add_argument("--uploads", type=int, default=4, help="uploads at once (service) or clicks (demo)")
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.engines, args.front, args.uploads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
