"""Steadiness over time: a centred Gaussian window over each track's FFHQ quad and latents.

A centred window (frames t − r … t + r, r = window // 2) rather than a causal one, so a face that does
not move gets exactly its own average, with no lag behind one that does; the stream so runs r frames
behind decoding. Sigma is r / 2 (the kernel reaches 2σ); near the clip's ends or where the track is
absent the window shrinks symmetrically to the frames present (weights renormalised), so constant
motion passes unchanged. The quad is smoothed as STIT does it, as its
centre and its two half-side vectors (so the crop stays square), here with one window for all three.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

DEFAULT_WINDOW = 9  # frames (0.3 s at 30 fps): landmark noise averaged over 9, a turn of the head kept
T = TypeVar("T")


def window_weights(window: int) -> np.ndarray:
    """Gaussian weights of a centred window of `window` frames (odd; 1 = no smoothing), σ = radius / 2."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"the smoothing window must be an odd number of frames, 1 or more; got {window}")
    radius = window // 2
    if radius == 0:
        return np.ones(1)
    offsets = np.arange(-radius, radius + 1)
    return np.exp(-0.5 * (offsets / (radius / 2)) ** 2)


def centred(items: Iterable[T], radius: int) -> Iterator[tuple[T, list[T | None]]]:
    """Each item with its window [item t − radius … t + radius] (None beyond the ends), in order; holds
    2·radius + 1 items at a time."""
    full = 2 * radius + 1
    held: deque = deque([None] * radius, maxlen=full)  # the first item's past: nothing
    for item in items:
        held.append(item)
        if len(held) == full:
            yield held[radius], list(held)
    for _ in range(radius):  # the last items' future: nothing
        held.append(None)
        if len(held) == full and held[radius] is not None:
            yield held[radius], list(held)


def weighted_mean(values: list[np.ndarray | None], weights: np.ndarray) -> np.ndarray:
    """The weighted mean over the widest window centred on the middle value in which every value is present
    (None: absent, e.g. beyond the clip's ends or before a track starts), weights renormalised. Symmetric,
    so a face moving at constant speed is not pulled back near an end (a one-sided window would lag)."""
    centre = len(values) // 2
    reach = 0
    while reach < centre and values[centre - reach - 1] is not None and values[centre + reach + 1] is not None:
        reach += 1
    kept = slice(centre - reach, centre + reach + 1)
    total = float(np.sum(weights[kept]))
    return sum(v * (w / total) for v, w in zip(values[kept], weights[kept], strict=True))


def quad_parts(quad: np.ndarray) -> np.ndarray:
    """quad [4,2] (c − x − y, c − x + y, c + x + y, c + x − y) → [3,2] (c, x, y)."""
    return np.stack([quad.mean(0), (quad[2] + quad[3] - quad[0] - quad[1]) / 4,
                     (quad[1] + quad[2] - quad[0] - quad[3]) / 4])


def quad_from_parts(parts: np.ndarray) -> np.ndarray:
    c, x, y = parts
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def smooth_quad(quads: list[np.ndarray | None], weights: np.ndarray) -> np.ndarray:
    """The window's quads [4,2] (None: absent) → the smoothed quad of its centre."""
    return quad_from_parts(weighted_mean([None if q is None else quad_parts(q) for q in quads], weights))
