"""Side-by-side comparison images: original | fused | EOGI | ours, as in the paper's Figure 2 (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .images import check_rgb_uint8

FIGURE2_COLUMNS = (("original", None), ("fused", "fused"), ("EOGI", "eogi"), ("ours", "network"))
_WHITE, _BLACK, _RED = (255, 255, 255), (0, 0, 0), (200, 0, 0)


def make_grid(panels: Sequence[tuple[str, np.ndarray]], banner: str | None = None) -> np.ndarray:
    """(title, RGB uint8 [H,W,3]) panels of one height → RGB uint8 grid, titles above each panel.

    `banner`, when given, is drawn in red across the top (e.g. the untrained-weights warning), so a
    grid never circulates without it.
    """
    if not panels:
        raise ValueError("make_grid needs at least one panel")
    for title, image in panels:
        check_rgb_uint8(image, f"make_grid: panel {title!r}")
    height = panels[0][1].shape[0]
    if any(image.shape[0] != height for _, image in panels):
        raise ValueError(f"make_grid: panels differ in height {[image.shape[0] for _, image in panels]}")
    scale = max(height / 512, 0.35)  # text grows with the panels, readable at 256² and at 1024²
    strip = int(36 * scale) + 8
    columns = [np.vstack([_text_strip(title, image.shape[1], strip, scale, _BLACK), image]) for title, image in panels]
    grid = np.hstack(columns)
    if banner:
        grid = np.vstack([_text_strip(banner, grid.shape[1], strip, scale, _RED), grid])
    return grid


def _text_strip(text: str, width: int, height: int, scale: float, colour: tuple[int, int, int]) -> np.ndarray:
    strip = np.full((height, width, 3), _WHITE, np.uint8)
    thickness = max(1, round(2 * scale))
    font_scale = scale
    (text_width, text_height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    if text_width > width - 8:  # shrink long text (the banner on one narrow panel) to fit
        font_scale *= (width - 8) / text_width
        (text_width, text_height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    origin = ((width - text_width) // 2, (height + text_height) // 2)
    cv2.putText(strip, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, thickness, cv2.LINE_AA)
    return strip
