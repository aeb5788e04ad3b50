"""Steadiness of a clip edit with and without smoothing (docs/video.md's figures).

On clips made from a bundled photo with a known motion (tests/helpers/clips.py) and independent pixel
noise per frame (sensor noise: what makes landmarks jitter), for each smoothing window: the quad's
corner jitter (frame-to-frame corner motion beyond the known motion, px at 1024² crop scale) and the
frame-to-frame change of the edited output inside the face (mean |Δ| in 8-bit levels; the source's
own change beside it).

    python scripts/video_steadiness.py --engines TINY_ENGINES --frames 12 --windows 1 9
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deghost.runtime.faces.align import ffhq_quad  # noqa: E402
from deghost.runtime.faces.landmarks import alignment_points  # noqa: E402
from deghost.runtime.pipeline import Pipeline  # noqa: E402
from deghost.runtime.video.edit import ClipStats, edit_frames  # noqa: E402
from deghost.runtime.video.smooth import quad_parts  # noqa: E402
from tests.helpers.clips import motion_frames, photo  # noqa: E402


def noisy(frames: list[np.ndarray], sigma: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(f + rng.normal(0, sigma, f.shape), 0, 255).astype(np.uint8) for f in frames]


def quad_jitter(quads: list[np.ndarray], matrices: list[np.ndarray]) -> float:
    """Mean over frames of the largest corner error against the known motion from frame 0, at 1024 scale,
    after removing the mean error (the offset of the first frame's own landmarks)."""
    truth = [quads[0] @ m[:, :2].T + m[:, 2] for m in matrices]
    errors = np.stack([q - t for q, t in zip(quads, truth, strict=True)])
    errors -= errors.mean(0)
    scale = 1024 / (2 * np.hypot(*quad_parts(quads[0])[1]))
    return float(np.abs(errors).max(axis=(1, 2)).mean() * scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 9])
    parser.add_argument("--motions", nargs="+", default=["still", "pan"])
    parser.add_argument("--noise", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=20.0)
    args = parser.parse_args()
    with Pipeline.load(args.engines, backend="onnxruntime") as pipe:
        for kind in args.motions:
            frames, matrices = motion_frames(photo(scale=1.0), args.frames, kind)
            frames = noisy(frames, args.noise)
            for window in args.windows:
                out = list(edit_frames(pipe, frames, alpha=args.alpha, suppress="none", window=window,
                                       stats=ClipStats()))
                quads = [ffhq_quad(*alignment_points(f.faces[0].landmarks))[0] for f in out]
                steady = [np.linalg.inv(np.vstack([f.faces[0].transform, [0, 0, 1]]))[:2] for f in out]
                # the crop's corners in the frame, from the transform actually used
                side = pipe.preset.image_size
                corners = np.array([[0, 0], [0, side], [side, side], [side, 0]], float) - 0.5
                used = [corners @ m[:, :2].T + m[:, 2] for m in steady]
                face = np.zeros(frames[0].shape[:2], bool)
                x0, y0, x1, y1 = out[0].faces[0].box.astype(int)
                face[y0:y1, x0:x1] = True
                pairs = list(zip(out, out[1:], strict=False))
                change = [np.abs(b.edited[0].astype(float) - a.edited[0])[face].mean() for a, b in pairs]
                source = [np.abs(b.rgb.astype(float) - a.rgb)[face].mean() for a, b in pairs]
                print(f"{kind:6s} window {window:2d}: quad jitter raw {quad_jitter(quads, matrices):.2f} px, "
                      f"used {quad_jitter(used, matrices):.2f} px (1024 scale); output change in the face "
                      f"{np.mean(change):.2f} levels/frame (source {np.mean(source):.2f})", flush=True)


if __name__ == "__main__":
    main()
