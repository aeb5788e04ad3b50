"""Frames per second of a clip edit and the share of the video steps (decode, tracking, alignment,
paste-back, encode) in the frame time, one face per frame, OpenVINO fp32 and bf16 side by side.

    python scripts/video_bench.py --engines PAPER_ENGINES --frames 6
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deghost.runtime.pipeline import (
    PASTE,  # noqa: E402
    Pipeline,  # noqa: E402
)
from deghost.runtime.video.edit import ALIGN, DECODE, ENCODE, TRACK, edit_clip  # noqa: E402
from tests.helpers.clips import motion_frames, photo, sound, write_clip  # noqa: E402

VIDEO_STEPS = (DECODE, TRACK, ALIGN, PASTE, ENCODE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--preview", type=Path, help="also write a still of the preview clip here (PNG)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "pan.mp4", motion_frames(photo(scale=1.0), args.frames, "pan")[0],
                          audio=sound(args.frames / 25))
        for precision in args.precisions:
            with Pipeline.load(args.engines, backend="openvino", precision=precision) as pipe:
                pipe.prepare("network")
                edit_clip(pipe, clip, Path(folder) / "warm.mp4", frames=(0, 1))  # compile and warm up first
                grid = Path(folder) / "grid.mp4" if args.preview else None
                report = edit_clip(pipe, clip, Path(folder) / "out.mp4", grid=grid)
            total = sum(report.timings_ms.values())
            video = sum(report.timings_ms.get(k, 0.0) for k in VIDEO_STEPS)
            shares = " · ".join(f"{k} {100 * v / total:.1f} %" for k, v in report.timings_ms.items())
            print(f"openvino {precision}: {report.frames} frames 512x512, {report.frames_per_second:.3f} frames/s "
                  f"({report.elapsed_s / report.frames:.2f} s/frame); video steps {100 * video / total:.1f} % of "
                  f"the frame time; {shares}", flush=True)
            if args.preview:
                from deghost.runtime.images import write_image
                from deghost.runtime.video.io import read_frames

                still = next(f for f in read_frames(grid) if f.index == report.frames // 2).rgb
                write_image(args.preview, still[::2, ::2])
                args.preview = None


if __name__ == "__main__":
    main()
