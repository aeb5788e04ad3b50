"""Frames per second of a clip edit and the share of the video steps (decode, tracking, alignment,
paste-back, encode) in the frame time, one face per frame, OpenVINO fp32 and bf16 side by side, with the
head region's face parser (the occluder-aware paste) reported beside them.

    python scripts/video_bench.py --engines PAPER_ENGINES --frames 6

A precision this CPU cannot compute (bf16 without bf16 instructions) is reported and skipped, not timed
as something it is not.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import deghost  # noqa: E402, F401  (before cv2: OpenCV's pixel cap)
from deghost.runtime.backends.openvino import cpu_bf16_missing  # noqa: E402
from deghost.runtime.pipeline import PASTE, Pipeline  # noqa: E402
from deghost.runtime.video.edit import ALIGN, DECODE, ENCODE, PARSE, TRACK, edit_clip  # noqa: E402
from tests.helpers.clips import motion_frames, photo, sound, write_clip  # noqa: E402

VIDEO_STEPS = (DECODE, TRACK, ALIGN, PASTE, ENCODE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--preview", type=Path, help="also write a still of the preview clip here (PNG)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    for given in (args.preview, args.json):
        if given is not None and given.exists():
            parser.error(f"{given} exists; give a new path (results are never written over)")
    results = {"machine": platform.processor() or platform.machine(), "frames": args.frames, "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "pan.mp4", motion_frames(photo(scale=1.0), args.frames, "pan")[0],
                          audio=sound(args.frames / 25))
        for precision in args.precisions:
            if precision == "bf16" and cpu_bf16_missing():
                print(f"openvino bf16: not measured: {cpu_bf16_missing()}", flush=True)
                results["runs"].append({"precision": precision, "skipped": cpu_bf16_missing()})
                continue
            with Pipeline.load(args.engines, backend="openvino", precision=precision) as pipe:
                pipe.prepare("network")
                # the same clip once first: every batch shape it runs compiled (and cached) before timing
                edit_clip(pipe, clip, Path(folder) / "warm.mp4")
                grid = Path(folder) / "grid.mp4" if args.preview else None
                report = edit_clip(pipe, clip, Path(folder) / "out.mp4", grid=grid)
                stages = pipe.describe()
            total = sum(report.timings_ms.values())
            video = sum(report.timings_ms.get(k, 0.0) for k in VIDEO_STEPS)
            share = {k: round(100 * v / total, 2) for k, v in report.timings_ms.items()}
            print(f"openvino {precision} ({stages.get('generator')}): {report.frames} frames 512x512, "
                  f"{report.frames_per_second:.3f} frames/s ({report.elapsed_s / report.frames:.2f} s/frame); video "
                  f"steps {100 * video / total:.1f} % of the frame time, head region (face parser) "
                  f"{share.get(PARSE, 0.0):.1f} %; {' · '.join(f'{k} {v:.1f} %' for k, v in share.items())}",
                  flush=True)
            results["runs"].append({"precision": precision, "computes_in": stages, "frames_per_second":
                                    report.frames_per_second, "seconds_per_frame": report.elapsed_s / report.frames,
                                    "video_steps_percent": 100 * video / total, "percent": share})
            if args.preview:
                from deghost.runtime.images import write_image
                from deghost.runtime.video.io import read_frames

                still = next(f for f in read_frames(grid) if f.index == report.frames // 2).rgb
                write_image(args.preview, still[::2, ::2])
                args.preview = None
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
